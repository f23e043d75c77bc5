//! CustomScript settings, checked (pure): `fileUris`, `commandToExecute` or `script`, from the
//! public settings or `protectedSettings` (as the cloud allows), and the honest refusals:
//! PowerShell (the guests are Linux) and gzip'd scripts.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::handler::Command;
use super::model::{setting, Handler};

/// A configuration the handler cannot run; the texts never quote a protected value. `which` is
/// `settings` or `protectedSettings`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{which}.fileUris must be an array of URLs")]
    NotAnArray { which: &'static str },
    #[error("{which}.fileUris has an entry that is not an http:// or https:// URL")]
    NotHttp { which: &'static str },
    #[error("{which}.{key} must be a string")]
    NotAString {
        which: &'static str,
        key: &'static str,
    },
    #[error(
        "commandToExecute is given in both settings and protectedSettings; give it in one of them"
    )]
    CommandTwice,
    #[error("give one of commandToExecute and script, not both")]
    CommandAndScript,
    #[error("Microsoft.Compute/CustomScriptExtension takes commandToExecute; script is Microsoft.Azure.Extensions/CustomScript's")]
    ScriptForWindows,
    #[error("script must be base64")]
    NotBase64(#[source] base64::DecodeError),
    #[error("script is gzip-compressed, which this node does not unpack; give it uncompressed (base64 of the script itself)")]
    Gzip,
    #[error("commandToExecute (or script) is required in settings or protectedSettings")]
    NoCommand,
    #[error("commandToExecute runs PowerShell, which this node's guests do not have: they are Linux ({INTERPRETERS}). Run a shell command instead, e.g. `sh script.sh`, with publisher Microsoft.Azure.Extensions and type CustomScript")]
    PowerShell,
}

/// What a configuration asks the handler to do.
pub struct Config {
    pub file_uris: Vec<String>,
    pub command: Command,
    /// The command came from protectedSettings.
    pub protected: bool,
}

/// The interpreters of vmnode's images, for error messages.
pub const INTERPRETERS: &str =
    "vmnode:tiny has busybox sh; vmnode:debian:12 has sh (dash), bash and perl";

fn uris(m: &Map<String, Value>, which: &'static str) -> Result<Vec<String>, SettingsError> {
    let Some(v) = setting(m, "fileUris") else {
        return Ok(vec![]);
    };
    let arr = v.as_array().ok_or(SettingsError::NotAnArray { which })?;
    arr.iter()
        .map(|u| {
            let s = u.as_str().ok_or(SettingsError::NotAnArray { which })?;
            if s.starts_with("http://") || s.starts_with("https://") {
                Ok(s.to_string())
            } else {
                Err(SettingsError::NotHttp { which })
            }
        })
        .collect()
}

fn text(
    m: &Map<String, Value>,
    key: &'static str,
    which: &'static str,
) -> Result<Option<String>, SettingsError> {
    match setting(m, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SettingsError::NotAString { which, key }),
    }
}

/// Whether a command invokes PowerShell (`powershell`, `powershell.exe`, `pwsh`, any path).
fn runs_powershell(cmd: &str) -> bool {
    cmd.split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | '`'))
        .filter(|w| !w.is_empty())
        .any(|w| {
            let w = w.trim_matches(['"', '\'']);
            let base = w
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or(w)
                .to_ascii_lowercase();
            let base = base.strip_suffix(".exe").unwrap_or(&base);
            base == "powershell" || base == "pwsh"
        })
}

/// Checks a configuration. Error texts never quote a protected value.
pub fn parse(
    handler: Handler,
    public: &Map<String, Value>,
    protected: &Map<String, Value>,
) -> Result<Config, SettingsError> {
    let mut file_uris = uris(public, "settings")?;
    file_uris.extend(uris(protected, "protectedSettings")?);
    let pub_cmd = text(public, "commandToExecute", "settings")?;
    let prot_cmd = text(protected, "commandToExecute", "protectedSettings")?;
    let pub_script = text(public, "script", "settings")?;
    let prot_script = text(protected, "script", "protectedSettings")?;
    if pub_cmd.is_some() && prot_cmd.is_some() {
        return Err(SettingsError::CommandTwice);
    }
    let given = [&pub_cmd, &prot_cmd, &pub_script, &prot_script]
        .iter()
        .filter(|c| c.is_some())
        .count();
    if given > 1 {
        return Err(SettingsError::CommandAndScript);
    }
    if handler == Handler::WindowsCustomScript && (pub_script.is_some() || prot_script.is_some()) {
        return Err(SettingsError::ScriptForWindows);
    }
    let (command, protected) = if let Some(c) = pub_cmd {
        (Command::Shell(c), false)
    } else if let Some(c) = prot_cmd {
        (Command::Shell(c), true)
    } else if let Some(s) = pub_script.or(prot_script.clone()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(SettingsError::NotBase64)?;
        if raw.starts_with(&[0x1f, 0x8b]) {
            return Err(SettingsError::Gzip);
        }
        (Command::Script(raw), prot_script.is_some())
    } else {
        return Err(SettingsError::NoCommand);
    };
    if let Command::Shell(c) = &command {
        if runs_powershell(c) {
            return Err(SettingsError::PowerShell);
        }
    }
    Ok(Config {
        file_uris,
        command,
        protected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn commands_come_from_public_or_protected_settings() {
        let h = Handler::LinuxCustomScript;
        let c = parse(
            h,
            &m(json!({"fileUris": ["http://h/a.sh"], "commandToExecute": "sh a.sh"})),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(c.file_uris, vec!["http://h/a.sh"]);
        assert!(!c.protected);
        let c = parse(
            h,
            &m(json!({"FileUris": ["http://h/a.sh"]})),
            &m(json!({"commandToExecute": "X=secret sh a.sh"})),
        )
        .unwrap();
        assert!(c.protected && c.file_uris.len() == 1);
        let e = parse(
            h,
            &m(json!({"commandToExecute": "a"})),
            &m(json!({"commandToExecute": "secret-b"})),
        )
        .err()
        .unwrap();
        assert!(!e.to_string().contains("secret"));
        assert!(parse(h, &Map::new(), &Map::new()).is_err());
        assert!(parse(
            h,
            &m(json!({"fileUris": ["ftp://x"], "commandToExecute": "a"})),
            &Map::new()
        )
        .is_err());
        let s = base64::engine::general_purpose::STANDARD.encode("echo hi");
        assert!(matches!(
            parse(h, &m(json!({ "script": s })), &Map::new())
                .unwrap()
                .command,
            Command::Script(_)
        ));
    }

    #[test]
    fn powershell_is_refused_not_emulated() {
        for cmd in [
            "powershell -ExecutionPolicy Unrestricted -File script.ps1",
            "powershell.exe -File x.ps1",
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -c 1",
            "cd x && pwsh ./a.ps1",
        ] {
            let e = parse(
                Handler::WindowsCustomScript,
                &m(json!({ "commandToExecute": cmd })),
                &Map::new(),
            )
            .err()
            .unwrap_or_else(|| panic!("{cmd} accepted"))
            .to_string();
            assert!(e.contains("PowerShell") && e.contains("busybox sh"), "{e}");
        }
        // A shell running a file named .ps1 is a shell command (the seed's mistake).
        assert!(parse(
            Handler::LinuxCustomScript,
            &m(json!({"commandToExecute": "sh script.ps1"})),
            &Map::new()
        )
        .is_ok());
    }
}
