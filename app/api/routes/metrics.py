"""/metrics in Prometheus text format, aggregated over all worker processes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import metrics


async def scrape(request: Request) -> Response:
    request.app.state.db.update_gauges()
    body, content_type = metrics.render()
    return Response(body, headers={"Content-Type": content_type})


routes = [Route("/metrics", scrape, methods=["GET"])]
