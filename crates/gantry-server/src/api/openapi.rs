//! The OpenAPI 3 document of the HTTP API, generated from the route table
//! (`routes.rs`): the JSON Schemas of requests and answers come from the
//! same structs the handlers decode and write.

use super::routes::{routes, Answer::*, SchemaFn};
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = match (name, path.starts_with("/api/v1/deployments")) {
                ("id", true) => json!({"type": "integer", "format": "int64", "minimum": 1}),
                ("action", _) => json!({"type": "string", "enum": ["abort", "promote", "pause", "resume"]}),
                ("kind", _) => json!({"type": "string", "enum": ["unit", "integration", "security", "coverage"]}),
                _ => json!({"type": "string"}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

/// Query parameters from the properties of a query struct's schema.
fn query_parameters(g: &mut SchemaGenerator, f: SchemaFn) -> Vec<Value> {
    let s = f(g);
    let resolved = match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default().to_owned();
            g.definitions().get(&name).cloned().unwrap_or(Value::Null)
        }
        None => s.to_value(),
    };
    let required: Vec<String> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    resolved
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    json!({"name": name, "in": "query", "required": required.contains(name), "schema": schema})
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The whole document.
pub fn document() -> Value {
    // Requests are what the handlers accept; answers what they write.
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut replies = SchemaSettings::openapi3()
        .with(|s| s.contract = schemars::generate::Contract::Serialize)
        .into_generator();
    let mut paths = Map::new();
    for op in routes() {
        let mut parameters = path_parameters(op.path);
        if let Some(q) = op.query {
            parameters.extend(query_parameters(&mut g, q));
        }
        let mut responses = Map::new();
        let ok = match op.answer {
            Json(code, d, reply) => {
                let schema = reply(&mut replies).to_value();
                (
                    code,
                    json!({"description": d, "content": {"application/json": {"schema": schema}}}),
                )
            }
            Text(d) => (
                200,
                json!({"description": d, "content": {"text/plain": {"schema": {"type": "string"}}}}),
            ),
            Html(d) => (
                200,
                json!({"description": d, "content": {"text/html": {"schema": {"type": "string"}}}}),
            ),
            Bytes(d) => (
                200,
                json!({"description": d, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
            ),
            EventStream => (
                200,
                json!({"description": "a stream of `step`, `notice` and `lagged` events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
            ),
            Metrics => (
                200,
                json!({"description": "Prometheus text exposition", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}),
            ),
        };
        responses.insert(ok.0.to_string(), ok.1);
        if let Json(201, ..) = op.answer {
            if op.path == "/api/v1/releases/{version}" {
                responses.insert("200".into(), json!({"description": "already registered with the same content", "content": {"application/json": {"schema": {}}}}));
            }
        }
        let has_input =
            op.body.is_some() || op.bytes.is_some() || op.query.is_some() || op.path.contains('{');
        if op.needs.is_some() {
            responses.insert(
                "401".into(),
                error_response("missing, unknown, revoked or expired token"),
            );
            responses.insert(
                "403".into(),
                error_response("the caller's roles do not allow it"),
            );
            responses.insert(
                "404".into(),
                error_response("no such environment, release, deployment, user or token"),
            );
            responses.insert(
                "409".into(),
                error_response("the request conflicts with the current state"),
            );
            responses.insert(
                "500".into(),
                error_response(
                    "an internal error: the store failed, also while checking the token (which may be good)",
                ),
            );
        }
        if has_input {
            responses.insert("400".into(), error_response("a parameter is invalid"));
        }
        if op.body.is_some() || op.bytes.is_some() {
            responses.insert("413".into(), error_response("the body is too large"));
            responses.insert("415".into(), error_response("the body is not JSON"));
            responses.insert(
                "422".into(),
                error_response("the body does not match its schema"),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body(&mut g)}}});
        }
        if let Some(media) = op.bytes {
            operation["requestBody"] = json!({"required": true, "content": {media: {"schema": {"type": "string", "format": "binary"}}}});
        }
        match op.needs {
            Some(p) => {
                operation["security"] = json!([{"bearer": []}]);
                operation["x-gantry-permission"] = json!(p.as_str());
            }
            None => operation["security"] = json!([]),
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    for (name, schema) in replies.take_definitions(true) {
        let taken = schemas.insert(name.clone(), schema.clone());
        assert!(
            taken.is_none_or(|t| t == schema),
            "{name} is both a request and an answer, with different schemas"
        );
    }
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Gantry API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every CLI operation is one of these calls. Errors are JSON: {\"error\": {\"code\", \"message\"}}. Each operation's x-gantry-permission names what the caller's roles must grant."
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

/// The document as checked in under `docs/openapi.json`.
pub fn document_text() -> String {
    serde_json::to_string_pretty(&document()).expect("a document always serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each route of the table is in the document once, with the
    /// permission the table gives it, and nothing else is.
    #[test]
    fn every_route_is_documented_with_its_permission() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        let table = routes();
        assert_eq!(documented, table.len());
        for r in table {
            let op = &doc["paths"][r.path][r.method];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            match r.needs {
                Some(p) => {
                    assert_eq!(op["x-gantry-permission"], p.as_str(), "{}", r.path);
                    assert_eq!(op["security"], json!([{"bearer": []}]), "{}", r.path);
                }
                None => assert_eq!(op["security"], json!([]), "{}", r.path),
            }
        }
    }

    #[test]
    fn checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == document_text(),
            "docs/openapi.json is stale; run `cargo run -- openapi > docs/openapi.json`"
        );
    }
}
