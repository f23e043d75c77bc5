//! `osProfile` of a Linux VM, checked the way the cloud checks it before anything is made:
//! the admin user's name, its password (kept only as a sha512-crypt hash), its SSH public keys,
//! how it may log in, and `customData`. Every refusal is `InvalidParameter` with the cloud's
//! `target` (the field at fault) and a message that says what would be accepted.
//!
//! Where vmnode is more lenient than the cloud, it is to keep requests that name no credential at
//! all working (the CLI's and the SDK samples' defaults): such a VM gets its admin user without a
//! password or key, reachable through the guest agent and the serial console only.

use base64::Engine as _;

use super::model::SshKey;
use super::VmError;

/// The cloud's reserved admin user names (any case), plus the system accounts of a Debian guest
/// that `useradd` would collide with.
const RESERVED_USERS: &[&str] = &[
    "administrator",
    "admin",
    "user",
    "user1",
    "test",
    "user2",
    "test1",
    "user3",
    "admin1",
    "1",
    "123",
    "a",
    "actuser",
    "adm",
    "admin2",
    "aspnet",
    "backup",
    "console",
    "david",
    "guest",
    "john",
    "owner",
    "root",
    "server",
    "sql",
    "support",
    "support_388945a0",
    "sys",
    "test2",
    "test3",
    "user4",
    "user5",
    // Debian's own accounts (base-passwd, systemd, openssh).
    "daemon",
    "bin",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    "sshd",
    "messagebus",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "sudo",
];

/// The cloud's disallowed passwords.
const DISALLOWED_PASSWORDS: &[&str] = &[
    "abc@123",
    "P@$$w0rd",
    "P@ssw0rd",
    "P@ssword123",
    "Pa$$word",
    "pass@word1",
    "Password!",
    "Password1",
    "Password22",
    "iloveyou!",
];

/// `customData` is at most this many base64 characters (64 KiB decoded), as in the cloud.
pub const CUSTOM_DATA_MAX: usize = 87_380;

/// SSH public key types `authorized_keys` takes.
const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The credential part of `osProfile` as a request gives it (before checking).
#[derive(Clone, Debug, Default)]
pub struct OsProfileReq {
    pub admin_password: Option<String>,
    /// `linuxConfiguration.disablePasswordAuthentication` (`None`: not said).
    pub disable_password_auth: Option<bool>,
    pub ssh_keys: Vec<SshKeyReq>,
    pub custom_data: Option<String>,
    /// `linuxConfiguration.provisionVMAgent` (`None`: not said, which means true).
    pub provision_vm_agent: Option<bool>,
}

/// A key as given: `path` may be left out (the admin user's `authorized_keys`).
#[derive(Clone, Debug, Default)]
pub struct SshKeyReq {
    pub path: Option<String>,
    pub key_data: String,
}

/// The checked profile, as the VM record keeps it.
#[derive(Clone, Debug)]
pub struct OsProfile {
    pub admin_password_hash: Option<String>,
    pub ssh_public_keys: Vec<SshKey>,
    pub custom_data: Option<String>,
    pub disable_password_auth: bool,
    pub provision_vm_agent: bool,
}

fn invalid(target: &str, message: impl Into<String>) -> VmError {
    VmError::InvalidField {
        target: target.into(),
        message: message.into(),
    }
}

/// The admin user of a Linux VM: 1-32 characters (what `useradd` takes; the cloud allows 64),
/// lower-case letters, digits, `_`, `-` and `.`, starting with a letter or `_`, and none of the
/// reserved names.
pub fn validate_admin_username(name: &str) -> Result<(), VmError> {
    if name.is_empty() || name.len() > 32 {
        return Err(invalid(
            "adminUsername",
            format!(
                "The Admin Username '{name}' is invalid: a Linux user name is 1-32 characters."
            ),
        ));
    }
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if !ok_first || !ok_rest {
        return Err(invalid(
            "adminUsername",
            format!(
                "The Admin Username '{name}' is invalid: Linux admin user names use lower-case letters, digits, '_', '-' and '.', and start with a letter or '_' (no upper case, no special characters, not starting with '$' or '-')."
            ),
        ));
    }
    if RESERVED_USERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(invalid(
            "adminUsername",
            format!("The Admin Username specified is not allowed: '{name}' is reserved. Choose another name, e.g. azureuser."),
        ));
    }
    Ok(())
}

/// A Linux admin password: 6-72 characters, no control characters, 3 of 4 classes (lower,
/// upper, digit, special), and not one of the cloud's disallowed values.
pub fn validate_password(p: &str) -> Result<(), VmError> {
    let msg = "The supplied password must be between 6-72 characters long and must satisfy at least 3 of password complexity requirements from the following: 1) Contains an uppercase character 2) Contains a lowercase character 3) Contains a numeric digit 4) Contains a special character 5) Control characters are not allowed";
    let n = p.chars().count();
    if !(6..=72).contains(&n) || p.chars().any(char::is_control) {
        return Err(invalid("adminPassword", msg));
    }
    let classes = [
        p.chars().any(|c| c.is_lowercase()),
        p.chars().any(|c| c.is_uppercase()),
        p.chars().any(|c| c.is_ascii_digit()),
        p.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|c| **c).count() < 3 {
        return Err(invalid("adminPassword", msg));
    }
    if DISALLOWED_PASSWORDS.contains(&p) {
        return Err(invalid(
            "adminPassword",
            "The supplied password is on the list of disallowed passwords; choose another.",
        ));
    }
    Ok(())
}

/// An OpenSSH public key line: `type base64 [comment]`, whose blob names the same type.
pub fn validate_key_data(key: &str) -> Result<(), VmError> {
    let bad = || {
        invalid(
            "linuxConfiguration.ssh.publicKeys.keyData",
            "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid: give one OpenSSH public key line ('ssh-ed25519 AAAA... comment' or 'ssh-rsa AAAA...'), as in a .pub file.",
        )
    };
    if key.contains(['\n', '\r', '\0']) {
        return Err(bad());
    }
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(bad());
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    // The blob starts with the key type as an SSH string: u32 length, then the name.
    let named = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(bad());
    }
    Ok(())
}

/// Where a key goes: an absolute path with no `..`, no control characters.
fn validate_key_path(path: &str) -> Result<(), VmError> {
    let ok = path.starts_with('/')
        && !path.ends_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control)
        && path.len() <= 4096;
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "linuxConfiguration.ssh.publicKeys.path",
            format!("The value of parameter linuxConfiguration.ssh.publicKeys.path '{path}' is invalid: give an absolute file path without '..', such as /home/azureuser/.ssh/authorized_keys."),
        ))
    }
}

/// The admin user's own `authorized_keys`: where keys go when no path is given.
pub fn default_key_path(user: &str) -> String {
    format!("/home/{user}/.ssh/authorized_keys")
}

/// sha512-crypt, as /etc/shadow holds it (`$6$salt$hash`, a random 16-character salt).
pub fn hash_password(p: &str) -> Result<String, VmError> {
    sha_crypt::sha512_simple(p, &sha_crypt::Sha512Params::default())
        .map_err(|e| VmError::InvalidParameter(format!("cannot hash the admin password: {e:?}")))
}

/// Checks a profile for admin user `user`; hashes the password. Nothing is written.
pub fn check(user: &str, req: &OsProfileReq) -> Result<OsProfile, VmError> {
    validate_admin_username(user)?;
    let mut keys = Vec::new();
    for k in &req.ssh_keys {
        validate_key_data(k.key_data.trim())?;
        let path = k
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| default_key_path(user));
        validate_key_path(&path)?;
        keys.push(SshKey {
            path,
            key_data: k.key_data.trim().to_string(),
        });
    }
    if let Some(p) = &req.admin_password {
        validate_password(p)?;
    }
    let has_password = req.admin_password.is_some();
    // Not said: off when a key is the only credential (az's way), else on.
    let disable = req
        .disable_password_auth
        .unwrap_or(!has_password && !keys.is_empty());
    if disable && keys.is_empty() {
        return Err(invalid(
            "linuxConfiguration",
            "Authentication using either SSH or by user name and password must be enabled in Linux profile: disablePasswordAuthentication is true but no SSH public key is given. Add linuxConfiguration.ssh.publicKeys (`--ssh-key-values`) or allow password authentication.",
        ));
    }
    if req.disable_password_auth == Some(false) && !has_password {
        return Err(invalid(
            "adminPassword",
            "Required parameter 'adminPassword' is missing (null): password authentication is enabled (disablePasswordAuthentication false). Give adminPassword (`--admin-password`) or disable password authentication and give an SSH key.",
        ));
    }
    if let Some(cd) = &req.custom_data {
        let ok = cd.len() <= CUSTOM_DATA_MAX
            && base64::engine::general_purpose::STANDARD
                .decode(cd.trim())
                .is_ok();
        if !ok {
            return Err(invalid(
                "customData",
                format!("Custom data in OSProfile must be in Base64 encoding and with a maximum length of {CUSTOM_DATA_MAX} characters."),
            ));
        }
    }
    let admin_password_hash = req
        .admin_password
        .as_deref()
        .map(hash_password)
        .transpose()?;
    Ok(OsProfile {
        admin_password_hash,
        ssh_public_keys: keys,
        custom_data: req.custom_data.as_ref().map(|c| c.trim().to_string()),
        disable_password_auth: disable,
        provision_vm_agent: req.provision_vm_agent.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ssh-keygen -t ed25519 (a throwaway key).
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEo5jZ5k6qkq3n0f8zV3QfNn6m4hJX2xg2r0mYq3b9cT test@host";

    fn target(e: VmError) -> String {
        match e {
            VmError::InvalidField { target, .. } => target,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn admin_user_names_follow_the_cloud() {
        for ok in ["azureuser", "deploy", "_svc", "ops-1", "a.b"] {
            assert!(validate_admin_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Admin",
            "root",
            "ROOT",
            "administrator",
            "user1",
            "sshd",
            "-x",
            "$x",
            "1abc",
            "a b",
            "a@b",
            "UpperCase",
            &"x".repeat(33),
        ] {
            let e = validate_admin_username(bad).unwrap_err();
            assert_eq!(target(e), "adminUsername", "{bad}");
        }
    }

    #[test]
    fn passwords_need_length_and_three_classes() {
        for ok in [
            "Passw0rd!Passw0rd",
            "abcDEF123",
            "abc-def-123",
            "ABC_DEF_ghi",
        ] {
            assert!(validate_password(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Ab1!",           // too short
            "abcdefghijklmn", // one class
            "abcdefgh12345",  // two classes
            "Password1",      // disallowed
            "P@ssw0rd",       // disallowed
            "Abc123\ndef",    // control character
            &format!("Aa1{}", "x".repeat(70)),
        ] {
            let e = validate_password(bad).unwrap_err();
            assert_eq!(target(e), "adminPassword", "{bad:?}");
        }
    }

    #[test]
    fn ssh_keys_are_openssh_public_keys() {
        assert!(validate_key_data(ED25519).is_ok());
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3M= x",
            "ssh-ed25519 !!!notbase64",
            // The blob names another type than the line.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEo5jZ5k6qkq3n0f8zV3QfNn6m4hJX2xg2r0mYq3b9cT",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEo5jZ5k6qkq3n0f8zV3QfNn6m4hJX2xg2r0mYq3b9cT\nssh-rsa x",
        ] {
            let e = validate_key_data(bad).unwrap_err();
            assert_eq!(target(e), "linuxConfiguration.ssh.publicKeys.keyData", "{bad}");
        }
    }

    #[test]
    fn authentication_must_be_possible() {
        let key = SshKeyReq {
            path: None,
            key_data: ED25519.into(),
        };
        // A key alone: password authentication is off, the key goes to the user's file.
        let p = check(
            "azureuser",
            &OsProfileReq {
                ssh_keys: vec![key.clone()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.disable_password_auth);
        assert_eq!(
            p.ssh_public_keys[0].path,
            "/home/azureuser/.ssh/authorized_keys"
        );
        assert!(p.provision_vm_agent);
        // Password auth disabled without a key: nobody could log in.
        let e = check(
            "azureuser",
            &OsProfileReq {
                disable_password_auth: Some(true),
                admin_password: Some("Passw0rd!Passw0rd".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(target(e), "linuxConfiguration");
        // Password auth enabled explicitly without a password.
        let e = check(
            "azureuser",
            &OsProfileReq {
                disable_password_auth: Some(false),
                ssh_keys: vec![key.clone()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(target(e), "adminPassword");
        // A relative key path.
        let e = check(
            "azureuser",
            &OsProfileReq {
                ssh_keys: vec![SshKeyReq {
                    path: Some("home/x/../../etc/shadow".into()),
                    key_data: ED25519.into(),
                }],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(target(e), "linuxConfiguration.ssh.publicKeys.path");
        // Nothing at all: accepted (vmnode's leniency, see the module doc).
        let p = check("azureuser", &OsProfileReq::default()).unwrap();
        assert!(!p.disable_password_auth && p.admin_password_hash.is_none());
    }

    #[test]
    fn the_password_is_kept_only_as_a_sha512_crypt_hash() {
        let p = check(
            "azureuser",
            &OsProfileReq {
                admin_password: Some("Passw0rd!Passw0rd".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let h = p.admin_password_hash.unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        assert!(!h.contains("Passw0rd"));
        assert!(sha_crypt::sha512_check("Passw0rd!Passw0rd", &h).is_ok());
        assert!(!p.disable_password_auth);
    }

    #[test]
    fn custom_data_is_base64_and_bounded() {
        let ok = |cd: &str| {
            check(
                "azureuser",
                &OsProfileReq {
                    custom_data: Some(cd.into()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            ok("I2Nsb3VkLWNvbmZpZwo=").unwrap().custom_data.as_deref(),
            Some("I2Nsb3VkLWNvbmZpZwo=")
        );
        assert_eq!(target(ok("not base64!").unwrap_err()), "customData");
        let big = "QUFB".repeat(CUSTOM_DATA_MAX / 4 + 1);
        assert_eq!(target(ok(&big).unwrap_err()), "customData");
    }
}
