//! Environment variables and secrets: `env` and `secrets` tables, the names
//! they may use and the placeholders their values may hold.

use super::*;

/// Environment variables Gantry sets itself; a config may not override them.
const RESERVED_ENV_PREFIX: &str = "GANTRY_";

impl Walker<'_> {
    /// A table of environment variables: NAME = "value".
    pub(super) fn env_vars(&mut self, v: &Val<'_>, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, path) else {
            return out;
        };
        for (key, value) in t.iter() {
            let name: &str = key.get_ref();
            let p = join(path, name);
            self.check_env_name(key.span(), &p, name);
            if let Some(s) = self.string(value, &p) {
                check_placeholders(self, value.span(), &p, &s);
                self.exec_safe(value.span(), &p, &s);
                if looks_secret(name) {
                    self.warn(
                        key.span(),
                        &p,
                        format!("{name} looks like a secret; reference it under `secrets` instead of storing its value here"),
                    );
                }
                out.insert(name.to_owned(), s);
            }
        }
        out
    }

    pub(super) fn secrets(&mut self, v: &Val<'_>, path: &str) -> BTreeMap<String, SecretRef> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, path) else {
            return out;
        };
        for (key, value) in t.iter() {
            let name: &str = key.get_ref();
            let p = join(path, name);
            self.check_env_name(key.span(), &p, name);
            if let Some(secret) = self.secret_ref(value, &p) {
                out.insert(name.to_owned(), secret);
            }
        }
        out
    }

    /// `{ env = "VARIABLE" }` or `{ file = "/path" }`.
    pub(super) fn secret_ref(&mut self, value: &Val<'_>, p: &str) -> Option<SecretRef> {
        let st = self.table(value, p)?;
        self.check_keys::<crate::schema::SecretSection>(st, p);
        match (st.get("env"), st.get("file")) {
            (Some(e), None) => {
                let ep = join(p, "env");
                let name = self.non_empty_string(e, &ep)?;
                // The OS cannot look these up: std::env::var refuses them.
                let problem = if name.contains('=') {
                    "must not contain '='"
                } else if name.contains('\0') {
                    "must not contain NUL (\\u0000)"
                } else {
                    return Some(SecretRef::Env(name));
                };
                self.error(
                    e.span(),
                    &ep,
                    format!("{name:?} {problem}; expected the name of a variable in the controller's environment, such as \"DATABASE_URL\""),
                );
                None
            }
            (None, Some(f)) => {
                let fp = join(p, "file");
                let file = self.non_empty_string(f, &fp)?;
                self.exec_safe(f.span(), &fp, &file)
                    .then(|| SecretRef::File(PathBuf::from(file)))
            }
            _ => {
                self.error(
                    value.span(),
                    p,
                    "a secret needs exactly one of `env = \"VARIABLE\"` or `file = \"/path\"`",
                );
                None
            }
        }
    }

    pub(super) fn check_env_name(&mut self, span: Range<usize>, path: &str, name: &str) {
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            self.error(
                span,
                path,
                format!("{name:?} is not a valid environment variable name"),
            );
        } else if name.starts_with(RESERVED_ENV_PREFIX) {
            self.error(span, path, format!("{name} is reserved: variables starting with {RESERVED_ENV_PREFIX} are set by Gantry"));
        }
    }
}

pub(super) fn check_placeholders(w: &mut Walker<'_>, span: Range<usize>, path: &str, s: &str) {
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let ph = &rest[start..start + len + 1];
        if !PLACEHOLDERS.contains(&ph) {
            w.error(
                span.clone(),
                path,
                format!(
                    "unknown placeholder {ph}; known: {}",
                    PLACEHOLDERS.join(" ")
                ),
            );
        }
        rest = &rest[start + len + 1..];
    }
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY"]
        .iter()
        .any(|w| upper.contains(w))
}
