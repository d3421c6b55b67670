//! The API's description: [`ApiDoc`] (OpenAPI 3.1, served at `/openapi.json`) and a
//! self-contained HTML page rendered from it (served at `/docs`, no external assets).

use std::fmt::Write as _;

use axum::response::Html;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, admin, codes, error, health, rooms};

/// The OpenAPI document of the HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "roomcast", description = "Accounts, rooms and history of a roomcast chat server. Chat itself happens over WebSocket at /ws."),
    paths(
        accounts::register,
        accounts::login,
        accounts::refresh,
        accounts::logout,
        accounts::me,
        rooms::create_room,
        rooms::list_rooms,
        rooms::get_room,
        rooms::add_member,
        rooms::messages,
        codes::create_room,
        codes::join_room,
        admin::rooms,
        admin::room_connections,
        admin::disconnect,
        admin::room_message,
        admin::broadcast,
        crate::healthz,
        health::readyz,
    ),
    components(schemas(error::ErrorBody, health::Health)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// `GET /docs`: the document as a browsable page.
pub async fn docs() -> Html<String> {
    let doc =
        serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document serializes to JSON");
    Html(render(&doc))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pretty(value: &Value) -> String {
    escape(&serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Renders the OpenAPI document `doc` as one HTML page: every path and method with its
/// summary, parameters, request body and responses, then the schemas.
pub fn render(doc: &Value) -> String {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t} API</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         details{{border:1px solid #ccc;border-radius:4px;margin:.5rem 0;padding:.3rem .6rem}}\
         summary{{cursor:pointer}}code.m{{font-weight:bold;text-transform:uppercase;margin-right:.5rem}}\
         pre{{background:#f6f6f6;padding:.5rem;overflow:auto}}</style></head><body>\
         <h1>{t} <small>{v}</small></h1><p>{d}</p><p><a href=\"/openapi.json\">openapi.json</a></p>",
        t = escape(title),
        v = escape(version),
        d = escape(doc["info"]["description"].as_str().unwrap_or("")),
    );
    html.push_str("<h2>Endpoints</h2>\n");
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let Some(methods) = item.as_object() else {
                continue;
            };
            for (method, op) in methods {
                let _ = write!(
                    html,
                    "<details><summary><code class=\"m\">{m}</code><code>{p}</code> {s}</summary>",
                    m = escape(method),
                    p = escape(path),
                    s = escape(op["summary"].as_str().unwrap_or("")),
                );
                if let Some(description) = op["description"].as_str() {
                    let _ = write!(html, "<p>{}</p>", escape(description));
                }
                if op.get("security").is_some() {
                    html.push_str("<p>Authentication: <code>Authorization: Bearer &lt;access token&gt;</code></p>");
                }
                if let Some(params) = op["parameters"].as_array() {
                    html.push_str("<h4>Parameters</h4><ul>");
                    for param in params {
                        let _ = write!(
                            html,
                            "<li><code>{n}</code> ({i}{r}) {d}</li>",
                            n = escape(param["name"].as_str().unwrap_or("")),
                            i = escape(param["in"].as_str().unwrap_or("")),
                            r = if param["required"] == Value::Bool(true) {
                                ", required"
                            } else {
                                ""
                            },
                            d = escape(param["description"].as_str().unwrap_or("")),
                        );
                    }
                    html.push_str("</ul>");
                }
                if let Some(body) = op.get("requestBody") {
                    let _ = write!(
                        html,
                        "<h4>Request body</h4><pre>{}</pre>",
                        pretty(&body["content"])
                    );
                }
                if let Some(responses) = op["responses"].as_object() {
                    html.push_str("<h4>Responses</h4><ul>");
                    for (status, response) in responses {
                        let _ = write!(
                            html,
                            "<li><b>{s}</b> {d}",
                            s = escape(status),
                            d = escape(response["description"].as_str().unwrap_or("")),
                        );
                        if let Some(content) = response.get("content") {
                            let _ = write!(html, "<pre>{}</pre>", pretty(content));
                        }
                        html.push_str("</li>");
                    }
                    html.push_str("</ul>");
                }
                html.push_str("</details>\n");
            }
        }
    }
    html.push_str("<h2>Schemas</h2>\n");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let _ = writeln!(
                html,
                "<details id=\"schema-{n}\"><summary><code>{n}</code></summary><pre>{s}</pre></details>",
                n = escape(name),
                s = pretty(schema),
            );
        }
    }
    html.push_str("</body></html>\n");
    html
}
