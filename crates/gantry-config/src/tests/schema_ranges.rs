//! The schema types are the one description of every number's range: the
//! walker reads each range from the schema (`schema::range`). These tests
//! hold the two together: every number the schema describes is bounded
//! there, and the walker takes exactly that range, no more and no less.

use super::errors_of;
use super::schema_keys::EVERY_KEY;
use crate::{json_schema, walk};
use serde_json::Value;
use std::collections::BTreeMap;

/// A key whose value is a number: its bounds, and whether it is an integer.
#[derive(Debug, Clone, Copy)]
struct Bounded {
    min: f64,
    max: f64,
    integer: bool,
}

/// Every number of every table type, by type and key; a number without
/// both bounds is returned apart.
fn numbers_of(schema: &Value) -> (BTreeMap<(String, String), Bounded>, Vec<String>) {
    let mut tables = vec![("File".to_string(), schema)];
    for (name, def) in schema["$defs"].as_object().unwrap() {
        tables.push((name.clone(), def));
    }
    let mut bounded = BTreeMap::new();
    let mut unbounded = Vec::new();
    for (table, def) in tables {
        let Some(props) = def.get("properties").and_then(Value::as_object) else {
            continue;
        };
        for (key, p) in props {
            let types: Vec<&str> = match &p["type"] {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            // A rule threshold is a number (or false); a size is written
            // with units and checked by its own rule, so it is not here.
            let threshold = p["anyOf"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["$ref"] == "#/$defs/Threshold"));
            let integer = types.contains(&"integer");
            if !(integer || types.contains(&"number") || threshold) {
                continue;
            }
            match (p["minimum"].as_f64(), p["maximum"].as_f64()) {
                (Some(min), Some(max)) => {
                    bounded.insert((table.clone(), key.clone()), Bounded { min, max, integer });
                }
                _ => unbounded.push(format!("{table}.{key}")),
            }
        }
    }
    (bounded, unbounded)
}

/// The table at a walker path such as `environments.staging.smoke.checks[0]`.
fn table_at<'t>(root: &'t mut toml::Table, path: &str) -> &'t mut toml::Table {
    let mut table = root;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (
                name,
                Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
            ),
            None => (segment, None),
        };
        let value = table
            .get_mut(name)
            .unwrap_or_else(|| panic!("{path}: no {name}"));
        let value = match index {
            Some(i) => &mut value.as_array_mut().unwrap()[i],
            None => value,
        };
        table = value
            .as_table_mut()
            .unwrap_or_else(|| panic!("{path}: {segment} is no table"));
    }
    table
}

fn value(b: Bounded, n: f64) -> toml::Value {
    if b.integer {
        toml::Value::Integer(n as i64)
    } else {
        toml::Value::Float(n)
    }
}

/// The walker's message for a value out of `b`, as it words each kind.
fn out_of_range(b: Bounded) -> String {
    if b.integer {
        format!(
            "expected an integer from {} to {}",
            b.min as i64, b.max as i64
        )
    } else {
        format!("expected a number from {} to {}", b.min, b.max)
    }
}

#[test]
fn every_number_in_the_schema_has_a_range() {
    let schema: Value = serde_json::from_str(&json_schema()).unwrap();
    let (bounded, unbounded) = numbers_of(&schema);
    assert_eq!(
        unbounded,
        Vec::<String>::new(),
        "numbers the schema leaves unbounded"
    );
    assert!(bounded.len() >= 20, "{bounded:#?}");
}

/// For each number of each table in a file that uses every key: its two
/// bounds are taken, and one past either is refused with the schema's
/// bounds in the message. A walker with a range of its own fails here.
#[test]
fn walker_holds_every_number_to_the_range_the_schema_gives() {
    let schema: Value = serde_json::from_str(&json_schema()).unwrap();
    let (bounded, _) = numbers_of(&schema);
    let mut base: toml::Table = toml::from_str(EVERY_KEY).unwrap();
    walk::checked_tables::take();
    errors_of(EVERY_KEY);
    let tables = walk::checked_tables::take_paths();
    // Every environment at its largest size, so no range is narrowed by
    // another key (a rolling update's surge is at most the instances).
    let largest = bounded[&("EnvironmentSection".to_string(), "instances".to_string())];
    for (type_name, path, _) in &tables {
        if type_name == "EnvironmentSection" {
            table_at(&mut base, path).insert("instances".into(), value(largest, largest.max));
        }
    }
    // Written back, tables come out in name order, so the environments'
    // promotion order changes: the one key that depends on it goes.
    table_at(&mut base, "environments.production.gates").remove("rehearsal_in");
    let errors = errors_of(&toml::to_string(&base).unwrap());
    assert!(
        errors.iter().all(|e| e.contains("zz_unknown")),
        "{errors:#?}"
    );

    let mut probed = Vec::new();
    for (type_name, path, keys) in &tables {
        for key in keys {
            let Some(&b) = bounded.get(&(type_name.clone(), key.clone())) else {
                continue;
            };
            let at = format!("{path}.{key}: ");
            for (n, refused) in [
                (b.min, false),
                (b.max, false),
                (b.min - 1.0, true),
                (b.max + 1.0, true),
            ] {
                let mut file = base.clone();
                table_at(&mut file, path).insert(key.clone(), value(b, n));
                let errors = errors_of(&toml::to_string(&file).unwrap());
                let here: Vec<&String> = errors
                    .iter()
                    .filter(|e| e.contains(&at) && e.contains("expected a"))
                    .collect();
                if refused {
                    let wanted = format!("{at}{}", out_of_range(b));
                    assert!(
                        here.iter().any(|e| e.contains(&wanted)),
                        "{at}{n} is refused with {wanted:?}: {errors:#?}"
                    );
                } else {
                    assert!(here.is_empty(), "{at}{n} is taken: {here:#?}");
                }
            }
            probed.push(format!("{type_name}.{key}"));
        }
    }
    probed.sort();
    probed.dedup();
    let mut all: Vec<String> = bounded.keys().map(|(t, k)| format!("{t}.{k}")).collect();
    all.sort();
    assert_eq!(probed, all, "the fixture holds every bounded number");
}

/// The JSON types a property's schema accepts (one level of `$ref` and
/// `anyOf` resolved); `null` stands for "may be left out" and is dropped.
fn accepted_types(schema: &Value, p: &Value) -> Vec<String> {
    let resolve = |s: &Value| -> Value {
        match s["$ref"].as_str() {
            Some(r) => schema["$defs"][r.trim_start_matches("#/$defs/")].clone(),
            None => s.clone(),
        }
    };
    let mut out = Vec::new();
    let mut add = |s: &Value| match &s["type"] {
        Value::String(t) => out.push(t.clone()),
        Value::Array(ts) => out.extend(ts.iter().filter_map(Value::as_str).map(String::from)),
        _ => {}
    };
    let p = resolve(p);
    add(&p);
    for branch in p["anyOf"].as_array().into_iter().flatten() {
        let b = resolve(branch);
        add(&b);
        for inner in b["anyOf"].as_array().into_iter().flatten() {
            add(&resolve(inner));
        }
    }
    out.retain(|t| t != "null");
    out
}

/// The walker refuses a value of a type the schema does not give a key,
/// at that key: for each key of each table in a file that uses every key,
/// a value of another type is reported there.
#[test]
fn walker_refuses_every_key_a_value_of_a_type_the_schema_does_not_give() {
    let schema: Value = serde_json::from_str(&json_schema()).unwrap();
    let mut base: toml::Table = toml::from_str(EVERY_KEY).unwrap();
    table_at(&mut base, "environments.production.gates").remove("rehearsal_in");
    walk::checked_tables::take();
    errors_of(EVERY_KEY);
    let tables = walk::checked_tables::take_paths();
    let probes: [(&str, toml::Value); 5] = [
        ("boolean", toml::Value::Boolean(true)),
        ("integer", toml::Value::Integer(7)),
        ("string", toml::Value::String("x".into())),
        ("array", toml::Value::Array(vec![])),
        ("object", toml::Value::Table(toml::Table::new())),
    ];
    let mut probed = 0;
    for (type_name, path, keys) in &tables {
        let def = if type_name == "File" {
            &schema
        } else {
            &schema["$defs"][type_name]
        };
        for key in keys.iter().filter(|k| *k != "zz_unknown") {
            let accepted = accepted_types(&schema, &def["properties"][key]);
            if accepted.is_empty() {
                continue; // any value (a JSON check's `equals`)
            }
            let Some((kind, wrong)) = probes.iter().find(|(kind, _)| {
                !accepted
                    .iter()
                    .any(|a| a == kind || (a == "number" && *kind == "integer"))
            }) else {
                continue;
            };
            let mut file = base.clone();
            table_at(&mut file, path).insert(key.clone(), wrong.clone());
            let errors = errors_of(&toml::to_string(&file).unwrap());
            let at = if path.is_empty() {
                format!(": {key}")
            } else {
                format!("{path}.{key}")
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&at) && !e.contains("zz_unknown")),
                "{at} = {kind} (the schema gives {accepted:?}) is refused there: {errors:#?}"
            );
            probed += 1;
        }
    }
    assert!(probed > 80, "{probed} keys probed");
}
