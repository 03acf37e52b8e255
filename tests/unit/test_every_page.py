"""Paging through the api-server's REST collections: plain data."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from slipway.demo import PAGE, every_page


def _server(total: int, cap: int = PAGE) -> tuple[list[str], Any]:
    """Serves ``total`` items, capping each page at ``cap`` as the api-server does."""
    asked: list[str] = []

    def get(path: str) -> dict[str, Any]:
        asked.append(path)
        query = parse_qs(urlsplit(path).query)
        offset, limit = int(query["offset"][0]), min(int(query["limit"][0]), cap)
        return {"items": list(range(total))[offset : offset + limit], "total_entries": total}

    return asked, get


def test_every_item_is_read_past_the_page_cap() -> None:
    asked, get = _server(215)
    assert every_page(get, "/api/v2/x?state=running", "items") == list(range(215))
    assert len(asked) == 3 and asked[0] == f"/api/v2/x?state=running&limit={PAGE}&offset=0"


def test_an_empty_or_exact_collection_stops() -> None:
    assert every_page(_server(0)[1], "/api/v2/x", "items") == []
    asked, get = _server(PAGE)
    assert every_page(get, "/api/v2/x", "items") == list(range(PAGE)) and len(asked) == 1
