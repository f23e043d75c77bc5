//! The NoCloud seed of a VM whose image carries cloud-init (manifest `provisioning: cloud-init`): an ISO9660
//! volume labelled `cidata` (genisoimage) with `meta-data` and `user-data` made from osProfile,
//! attached read-only. It is built once at create into `state/local/{vmId}/cidata.iso` and goes
//! with the VM.
//!
//! - meta-data: `instance-id` = vmId, `local-hostname` = computerName.
//! - user-data: a MIME multipart. Part 1, vmnode's `#cloud-config`: hostname, and the admin user
//!   (sudo without password, bash) with `osProfile.linuxConfiguration.ssh.publicKeys` and, if
//!   `adminPassword` was given, its sha512-crypt hash (the plain password is never written);
//!   password SSH logins are enabled only then. Part 2, `customData` (base64 in the API) decoded,
//!   when it is a `#cloud-config` document (merged by cloud-init after part 1) or a script
//!   starting with `#!` (run once at first boot); other customData is refused at create.
//! - network-config: none; the image's own DHCP client configures the NIC.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("customData is not valid base64")]
    CustomDataBase64(#[source] base64::DecodeError),
    #[error("customData must be a #cloud-config document or a script starting with #! for a cloud-init image")]
    CustomDataKind,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "genisoimage failed making {path} (is it installed? apt-get install genisoimage): {stderr}"
    )]
    Iso { path: PathBuf, stderr: String },
}

/// What the seed is made from.
#[derive(Clone, Debug, Default)]
pub struct SeedInput {
    pub vm_id: String,
    pub computer_name: String,
    pub admin_username: String,
    pub ssh_public_keys: Vec<String>,
    /// `osProfile.adminPassword` as vm/osprofile.rs hashed it (sha512-crypt).
    pub admin_password_hash: Option<String>,
    /// `linuxConfiguration.disablePasswordAuthentication`: no password SSH logins even with one.
    pub disable_password_auth: bool,
    /// `osProfile.customData` as the API carries it (base64).
    pub custom_data: Option<String>,
}

/// A JSON string is a YAML scalar: every value is written that way, so nothing can inject keys.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub fn meta_data(i: &SeedInput) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        q(&i.vm_id),
        q(&i.computer_name)
    )
}

/// The decoded customData and its MIME type, or why it is refused.
pub fn custom_part(i: &SeedInput) -> Result<Option<(&'static str, String)>, SeedError> {
    use base64::Engine;
    let Some(b64) = i.custom_data.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(SeedError::CustomDataBase64)?;
    let text = String::from_utf8(bytes).map_err(|_| SeedError::CustomDataKind)?;
    let kind = if text.starts_with("#cloud-config") {
        "text/cloud-config"
    } else if text.starts_with("#!") {
        "text/x-shellscript"
    } else {
        return Err(SeedError::CustomDataKind);
    };
    Ok(Some((kind, text)))
}

/// vmnode's own `#cloud-config` (part 1). `password_hash` is the crypt(3) hash, if any.
pub fn cloud_config(i: &SeedInput, password_hash: Option<&str>) -> String {
    let mut s = String::from("#cloud-config\n");
    s += &format!("hostname: {}\n", q(&i.computer_name));
    s += "preserve_hostname: false\n";
    s += "users:\n";
    s += &format!("  - name: {}\n", q(&i.admin_username));
    s += "    shell: /bin/bash\n";
    s += "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n";
    s += "    groups: [sudo]\n";
    match password_hash {
        Some(h) => s += &format!("    lock_passwd: false\n    passwd: {}\n", q(h)),
        None => s += "    lock_passwd: true\n",
    }
    if !i.ssh_public_keys.is_empty() {
        s += "    ssh_authorized_keys:\n";
        for k in &i.ssh_public_keys {
            s += &format!("      - {}\n", q(k.trim()));
        }
    }
    s += &format!(
        "ssh_pwauth: {}\n",
        password_hash.is_some() && !i.disable_password_auth
    );
    s
}

/// The whole user-data: a MIME multipart of vmnode's cloud-config and the customData.
pub fn user_data(i: &SeedInput, password_hash: Option<&str>) -> Result<String, SeedError> {
    const B: &str = "==vmnode-cidata-boundary==";
    let mut parts = vec![("text/cloud-config", cloud_config(i, password_hash))];
    parts.extend(custom_part(i)?);
    let mut s = format!("Content-Type: multipart/mixed; boundary=\"{B}\"\nMIME-Version: 1.0\n\n");
    for (n, (kind, body)) in parts.iter().enumerate() {
        s += &format!(
            "--{B}\nContent-Type: {kind}; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Disposition: attachment; filename=\"part-{n}\"\n\n{body}"
        );
        if !body.ends_with('\n') {
            s.push('\n');
        }
    }
    s += &format!("--{B}--\n");
    Ok(s)
}

/// Checks what can be refused before anything is made (bad customData).
pub fn validate(i: &SeedInput) -> Result<(), SeedError> {
    custom_part(i).map(|_| ())
}

/// Writes the seed ISO at `path` (replacing one there).
pub fn make_seed(i: &SeedInput, path: &Path) -> Result<(), SeedError> {
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| SeedError::Io {
            what,
            path: p,
            source,
        }
    };
    let user = user_data(i, i.admin_password_hash.as_deref())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let src = tempfile::Builder::new()
        .prefix(".cidata-")
        .tempdir_in(dir)
        .map_err(io("cannot create a temp dir in", dir))?;
    for (name, body) in [("meta-data", meta_data(i)), ("user-data", user)] {
        let p = src.path().join(name);
        std::fs::write(&p, body).map_err(io("cannot write", &p))?;
    }
    let tmp = dir.join(".cidata.iso.tmp");
    let out = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(&tmp)
        .arg(src.path().join("meta-data"))
        .arg(src.path().join("user-data"))
        .output()
        .map_err(io("cannot run genisoimage for", path))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(SeedError::Iso {
            path: path.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // The seed holds a password hash: only root reads it.
    let _ = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    std::fs::rename(&tmp, path).map_err(io("cannot move the seed to", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::osprofile::hash_password;
    use base64::Engine;

    fn input() -> SeedInput {
        SeedInput {
            vm_id: "11111111-2222-3333-4444-555555555555".into(),
            computer_name: "ci-guest".into(),
            admin_username: "azureuser".into(),
            ssh_public_keys: vec!["ssh-ed25519 AAAAC3Nz test@host".into()],
            admin_password_hash: Some(hash_password("S3cret!pass").unwrap()),
            disable_password_auth: false,
            custom_data: None,
        }
    }

    #[test]
    fn meta_and_user_data_carry_the_os_profile() {
        let i = input();
        assert_eq!(
            meta_data(&i),
            "instance-id: \"11111111-2222-3333-4444-555555555555\"\nlocal-hostname: \"ci-guest\"\n"
        );
        let h = hash_password("S3cret!pass").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        assert!(sha_crypt::sha512_check("S3cret!pass", &h).is_ok());
        let u = user_data(&i, Some(&h)).unwrap();
        assert!(u.contains("Content-Type: text/cloud-config"), "{u}");
        assert!(u.contains("#cloud-config\nhostname: \"ci-guest\"\n"), "{u}");
        assert!(u.contains("  - name: \"azureuser\"\n"), "{u}");
        assert!(
            u.contains("      - \"ssh-ed25519 AAAAC3Nz test@host\"\n"),
            "{u}"
        );
        assert!(u.contains(&format!("passwd: {}", q(&h))), "{u}");
        assert!(u.contains("ssh_pwauth: true"), "{u}");
        assert!(!u.contains("S3cret!pass"), "plain password in {u}");
        // Without a password the account is locked and password logins are off.
        let u = user_data(&i, None).unwrap();
        assert!(
            u.contains("lock_passwd: true") && u.contains("ssh_pwauth: false"),
            "{u}"
        );
    }

    #[test]
    fn custom_data_rule() {
        let b64 = |s: &str| Some(base64::engine::general_purpose::STANDARD.encode(s));
        let mut i = input();
        i.custom_data = b64("#cloud-config\nruncmd: [touch, /x]\n");
        let u = user_data(&i, None).unwrap();
        assert_eq!(
            u.matches("Content-Type: text/cloud-config").count(),
            2,
            "{u}"
        );
        assert!(u.contains("runcmd: [touch, /x]"), "{u}");
        i.custom_data = b64("#!/bin/sh\necho hi\n");
        let u = user_data(&i, None).unwrap();
        assert!(u.contains("Content-Type: text/x-shellscript"), "{u}");
        i.custom_data = b64("just some text");
        assert!(matches!(validate(&i), Err(SeedError::CustomDataKind)));
        i.custom_data = Some("***".into());
        assert!(matches!(validate(&i), Err(SeedError::CustomDataBase64(_))));
        // Values cannot add YAML keys.
        let mut i = input();
        i.computer_name = "x\nusers: []".into();
        assert!(meta_data(&i).contains("\"x\\nusers: []\""));
    }

    #[test]
    fn seed_iso_is_labelled_cidata() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("cidata.iso");
        make_seed(&input(), &iso).unwrap();
        let bytes = std::fs::read(&iso).unwrap();
        // The primary volume descriptor at sector 16: "CD001", volume id at byte 40.
        let pvd = &bytes[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(std::str::from_utf8(&pvd[40..46]).unwrap(), "cidata");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("local-hostname: \"ci-guest\""));
        assert!(!text.contains("S3cret!pass"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
