//! Route tables. Each HTTP function lists its routes once — method, path template, operation —
//! and its router dispatches through that list, so the list that `tests/tests/api_contract.rs`
//! compares with the OpenAPI documents is, by construction, the set of routes served.

use crate::http::Problem;
use lambda_http::http::{header, HeaderValue, Method, StatusCode};
use lambda_http::{Body, Response};

/// One route: a method, a path template as the OpenAPI document spells it (`/holds/{holdId}`:
/// a `{…}` segment matches any one non-empty segment) and the operation it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<Op> {
    pub method: &'static str,
    pub path: &'static str,
    pub op: Op,
}

/// What a request path and method find in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a, Op> {
    /// The operation, with the path's `{…}` segments in template order.
    Route(Op, Vec<&'a str>),
    /// The path is served, but not with this method: the methods it takes (an `Allow` value).
    MethodNotAllowed(String),
    NotFound,
}

impl<Op> Found<'_, Op> {
    /// Whether the path is one the table serves (with any method).
    pub fn is_known_path(&self) -> bool {
        !matches!(self, Found::NotFound)
    }
}

/// Looks `method` and `path` up in `table`. Empty segments are ignored, so a trailing slash or
/// a doubled one finds the same route.
pub fn find<'a, Op: Copy>(table: &[Route<Op>], method: &Method, path: &'a str) -> Found<'a, Op> {
    let segs: Vec<&'a str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut allow: Vec<&str> = Vec::new();
    for route in table {
        let Some(params) = match_template(route.path, &segs) else { continue };
        if route.method == method.as_str() {
            return Found::Route(route.op, params);
        }
        if !allow.contains(&route.method) {
            allow.push(route.method);
        }
    }
    if allow.is_empty() {
        Found::NotFound
    } else {
        Found::MethodNotAllowed(allow.join(", "))
    }
}

fn match_template<'a>(template: &str, segs: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, seg) in parts.iter().zip(segs) {
        if part.starts_with('{') && part.ends_with('}') {
            params.push(*seg);
        } else if part != seg {
            return None;
        }
    }
    Some(params)
}

/// 405 with the `Allow` header RFC 9110 asks for (the methods the path does take).
pub fn method_not_allowed(method: &Method, allow: &str) -> Response<Body> {
    let mut resp =
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed here"))
            .into_response();
    if let Ok(v) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Route<u8>] = &[
        Route { method: "POST", path: "/holds", op: 1 },
        Route { method: "GET", path: "/holds/{holdId}", op: 2 },
        Route { method: "DELETE", path: "/holds/{holdId}", op: 3 },
        Route { method: "POST", path: "/holds/{holdId}/confirm", op: 4 },
    ];

    #[test]
    fn finds_the_route_its_parameters_and_the_methods_a_path_takes() {
        assert_eq!(find(TABLE, &Method::POST, "/holds"), Found::Route(1, vec![]));
        assert_eq!(find(TABLE, &Method::GET, "/holds/h1/"), Found::Route(2, vec!["h1"]));
        assert_eq!(find(TABLE, &Method::POST, "//holds/h1/confirm"), Found::Route(4, vec!["h1"]));
        assert_eq!(find(TABLE, &Method::PUT, "/holds/h1"), Found::MethodNotAllowed("GET, DELETE".into()));
        assert_eq!(find(TABLE, &Method::GET, "/holds"), Found::MethodNotAllowed("POST".into()));
        for unknown in ["/", "/holds/h1/confirm/x", "/hold", "/holds/h1/cancel"] {
            let found = find(TABLE, &Method::GET, unknown);
            assert!(!found.is_known_path(), "{unknown}: {found:?}");
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let resp = method_not_allowed(&Method::PUT, "GET, DELETE");
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(resp.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()), Some("GET, DELETE"));
    }
}
