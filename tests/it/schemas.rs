//! The JSON Schemas in `schemas/frames/` and the Rust wire types cannot drift:
//! every example loads into the wire type and serialises back unchanged, and
//! every frame the schema defines has an example.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tertulia_actors::model::protocol::{ClientFrame, ServerFrame, parse_client_frame};

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/frames")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn examples(schema: &Value) -> Vec<Value> {
    schema["examples"].as_array().unwrap().clone()
}

/// Every frame type the schema's `oneOf` allows must have an example.
fn assert_every_frame_has_an_example(schema: &Value) {
    let defined: BTreeSet<String> = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reference| {
            let name = reference["$ref"]
                .as_str()
                .unwrap()
                .trim_start_matches("#/$defs/");
            schema["$defs"][name]["properties"]["type"]["const"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let exemplified: BTreeSet<String> = examples(schema)
        .iter()
        .map(|example| example["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(defined, exemplified);
}

#[test]
fn client_frame_examples_load_into_the_wire_types() {
    let schema = schema("client.schema.json");
    assert_every_frame_has_an_example(&schema);
    for example in examples(&schema) {
        let frame: ClientFrame =
            serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(serde_json::to_value(&frame).unwrap(), example);
        parse_client_frame(&example.to_string(), 16 * 1024)
            .unwrap_or_else(|e| panic!("{example}: {e:?}"));
    }
}

#[test]
fn server_frame_examples_load_into_the_wire_types() {
    let schema = schema("server.schema.json");
    assert_every_frame_has_an_example(&schema);
    for example in examples(&schema) {
        let frame: ServerFrame =
            serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
        let encoded: Value = serde_json::from_str(frame.encode().as_str()).unwrap();
        assert_eq!(encoded, example);
    }
}
