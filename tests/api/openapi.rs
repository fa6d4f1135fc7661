//! The committed OpenAPI document matches the code.

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = tacho::adapters::http::openapi::spec_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: regenerate it with `cargo run -- openapi --output openapi/openapi.json` and commit it"
    );
}

#[test]
fn every_route_documents_its_errors_and_the_bearer_scheme() {
    let spec: serde_json::Value = serde_json::from_str(&tacho::adapters::http::openapi::spec_json()).unwrap();
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            if path.starts_with("/v1") {
                assert!(responses.contains_key("401"), "{method} {path} does not document 401");
                assert!(responses.contains_key("403"), "{method} {path} does not document 403");
            }
            for (status, response) in responses {
                if status.starts_with('4') {
                    let content = response["content"].as_object().unwrap();
                    assert!(content.contains_key("application/problem+json"), "{method} {path} {status}");
                }
            }
        }
    }
}
