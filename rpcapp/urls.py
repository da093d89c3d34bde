"""``include("rpcapp.urls")``: the gateways, under the URL namespace ``rpcapp``."""

from django.urls import path

from . import metrics, views
from .dashboard import views as dashboard
from .gateways.jsonrpc import jsonrpc
from .gateways.openapi import openapi
from .gateways.xmlrpc import xmlrpc_endpoint

app_name = "rpcapp"

urlpatterns = [
    path("jsonrpc/", jsonrpc, name="jsonrpc"),
    path("xmlrpc/", xmlrpc_endpoint, name="xmlrpc"),
    path("openapi.json", openapi, name="openapi"),
    path("call/<str:procedure>/", views.call, name="call"),
    path("metrics", metrics.metrics, name="metrics"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/data.json", dashboard.dashboard_data, name="dashboard-data"),
    path("dashboard/calls/", dashboard.history, name="history"),
    path("dashboard/calls/<str:pk>/", dashboard.call_detail, name="call-detail"),
    path("dashboard/calls/<str:pk>/replay/", dashboard.call_replay, name="call-replay"),
]
