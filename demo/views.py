"""The demo site's calculator page: remote procedures called while rendering."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rpcapp.views import call_or_error

OPERATIONS = [("add", "+"), ("subtract", "−"), ("multiply", "×"), ("divide", "÷")]


class CalculatorForm(forms.Form):
    a = forms.FloatField(label="a")
    op = forms.ChoiceField(choices=OPERATIONS, label="operation")
    b = forms.FloatField(label="b")


def calculator(request: HttpRequest) -> HttpResponse:
    """GET with a, op and b computes ``calculator.<op>(a, b)`` on a worker."""
    form = CalculatorForm(request.GET or None)
    outcome = None
    if form.is_valid():
        data = form.cleaned_data
        outcome = call_or_error(f"calculator.{data['op']}", data["a"], data["b"], fallback="unavailable")
    return render(request, "calculator.html", {"form": form, "outcome": outcome})
