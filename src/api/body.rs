//! Request bodies as typed serde structs: a field of the wrong type is a 400 InvalidParameter
//! that names the field in the cloud's `error.target` (`serde_path_to_error` finds it).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// `T` from a JSON body; a field of the wrong type is named from inside `properties`.
pub fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    parse_named(body, &["properties."])
}

/// Like [`parse`], the field named without the leading `strip` prefixes (in order), as the
/// cloud names it (a VM's `adminPassword`, not `properties.osProfile.adminPassword`).
pub fn parse_named<T: DeserializeOwned>(body: &Value, strip: &[&str]) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let target = target_of(&path, strip);
        let msg = e.into_inner().to_string();
        ApiError::bad_request(must_be(&target, &msg)).with_target(target)
    })
}

/// The cloud's `error.target` for serde's `properties.osProfile.x[0].y`: prefixes stripped,
/// list indexes dropped (the cloud names the field, not the item).
fn target_of(path: &str, strip: &[&str]) -> String {
    let path = strip
        .iter()
        .fold(path, |p, s| p.strip_prefix(s).unwrap_or(p));
    let mut out = String::with_capacity(path.len());
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// What a field of the wrong type is told, from what serde expected there.
fn must_be(target: &str, serde_msg: &str) -> String {
    let expected = serde_msg.rsplit("expected ").next().unwrap_or(serde_msg);
    let what = match expected.trim_end_matches('.') {
        "a string" => "a string".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" if target.ends_with("publicKeys") => "a list of {path, keyData}".into(),
        "a sequence" => "a list".into(),
        e if e.starts_with("u64") || e.starts_with("u32") || e.contains("integer") => {
            "a whole number".into()
        }
        e if e.starts_with("a map") || e.starts_with("struct") => "an object".into(),
        e => e.to_string(),
    };
    format!("'{target}' must be {what}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        properties: Props,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Props {
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        size: u64,
    }

    #[test]
    fn the_target_is_the_field_without_prefix_or_index() {
        let v = serde_json::json!({"properties": {"items": [{"size": 1}, {"size": "big"}]}});
        let e = parse::<Body>(&v).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("items.size"));
        assert_eq!(e.message, "'items.size' must be a whole number.");
        assert_eq!(e.code, "InvalidParameter");
    }
}
