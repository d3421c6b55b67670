//! HTTP API: accounts, rooms, seed 003 room codes, history pages, OpenAPI.
