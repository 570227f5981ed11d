"""kpisheet_ui: the Panel web app on top of the public API of kpisheet."""
