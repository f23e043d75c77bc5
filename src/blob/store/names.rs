//! Blob and container names: the cloud's rules for them, and how a blob name becomes one file
//! name (see [`super`]).

/// Cloud rules for a container name.
pub fn valid_container_name(n: &str) -> bool {
    (3..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

pub fn valid_blob_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 1024
}

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b',' | b'=' | b'+' | b'@')
}

/// The file name a blob's bytes live under.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if safe(b) && !(i == 0 && b == b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        use sha2::Digest;
        return format!("~h{}", hex::encode(sha2::Sha256::digest(name.as_bytes())));
    }
    out
}

/// The blob name of a data file, unless it is hashed (then the metadata has it).
pub fn decode_name(file: &str) -> Option<String> {
    if file.starts_with('.') || file.starts_with("~h") {
        return None;
    }
    percent_encoding::percent_decode_str(file)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The content type of a file the node wrote itself, from its extension.
pub fn content_type_of(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "bmp" => "image/bmp",
        "log" | "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_collide_with_ours() {
        for n in ["a", "a/b", "dir/x.vhd", ".hidden", "sp ace", "%41", "ünï"] {
            let e = encode_name(n);
            assert!(!e.starts_with('.') && !e.contains('/'), "{e}");
            assert_eq!(decode_name(&e).as_deref(), Some(n));
        }
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        assert!(encode_name(&"x".repeat(1000)).starts_with("~h"));
        assert_eq!(
            encode_name("vm1-osdisk-1234abcd.vhd"),
            "vm1-osdisk-1234abcd.vhd"
        );
    }

    #[test]
    fn container_names_follow_the_cloud() {
        assert!(valid_container_name("vhds"));
        assert!(valid_container_name("bootdiagnostics-vm1-0a1b"));
        for bad in ["ab", "Abc", "a--b", "-ab", "ab-", "a_b", &"a".repeat(64)] {
            assert!(!valid_container_name(bad), "{bad}");
        }
    }
}
