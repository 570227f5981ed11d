"""kpisheet_ui: the Panel web app on top of kpisheet's public API (``kpisheet serve``)."""
