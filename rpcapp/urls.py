"""``include("rpcapp.urls")``: the gateways, under the URL namespace ``rpcapp``."""

from django.urls import path

from . import metrics, views
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
]
