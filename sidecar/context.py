"""Typed keys for everything the app holds (aiohttp ``web.AppKey``)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from sidecar.auth import TokenVerifier
from sidecar.config import Config
from sidecar.db import Database
from sidecar.observability import Metrics
from sidecar.stripe_api import StripeApi

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
HTTP = web.AppKey("http", aiohttp.ClientSession)
DATABASE = web.AppKey("database", Database)
STRIPE = web.AppKey("stripe", StripeApi)
TOKENS = web.AppKey("tokens", TokenVerifier)
