//! A database URL, which may carry a password: shown and logged only with
//! the password replaced by `***`.

/// A PostgreSQL connection string (`postgres://USER:PASSWORD@HOST/DB` or
/// `host=… password=…`). `Display` and `Debug` hide the password; only
/// [`DatabaseUrl::expose`] gives the whole text, to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The text with its password, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The text with every password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The connection string without its password, and the password
    /// (percent-decoded from a URL), for a program that takes it from
    /// `PGPASSWORD` rather than from its command line.
    pub fn split_password(&self) -> (String, Option<String>) {
        let s = self.0.trim();
        if let Some((scheme, rest)) = s.split_once("://") {
            if let Some(at) = rest.rfind('@') {
                let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
                if let Some((user, password)) = userinfo.split_once(':') {
                    return (
                        format!("{scheme}://{user}@{host}"),
                        Some(percent_decode(password)),
                    );
                }
            }
            return (s.to_owned(), None);
        }
        // key=value words: the password word goes (quoted values kept whole).
        let mut words: Vec<String> = Vec::new();
        let (mut word, mut quoted) = (String::new(), false);
        for c in s.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    word.push(c);
                }
                c if c.is_whitespace() && !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        let mut kept = Vec::new();
        let mut password = None;
        for word in words {
            match word.split_once('=') {
                Some((k, v)) if k.trim() == "password" => {
                    password = Some(v.trim_matches('\'').to_owned());
                }
                _ => kept.push(word),
            }
        }
        (kept.join(" "), password)
    }
}

/// `%XX` escapes decoded (anything else kept as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<DatabaseUrl, Self::Err> {
        Ok(DatabaseUrl::new(s))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

const HIDDEN: &str = "***";

fn redact(s: &str) -> String {
    let s = s.trim();
    match s.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            // The user information ends at the last `@`: a password with an
            // unescaped `@`, `/` or `?` stays hidden whole (an `@` in the
            // query hides the host too, which errs on the safe side).
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                let hidden = if userinfo.contains(':') {
                    format!(":{HIDDEN}")
                } else {
                    String::new()
                };
                format!(
                    "{scheme}://{}{hidden}{}",
                    redact_query(user),
                    redact_query(&rest[at..])
                )
            }
            None => format!("{scheme}://{}", redact_query(rest)),
        },
        None => redact_key_values(s),
    }
}

/// `password=…` in a URL's query.
fn redact_query(tail: &str) -> String {
    let Some((before, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={HIDDEN}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

/// `password=…` (quoted or not) in a `key=value` connection string.
fn redact_key_values(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = find_password_key(rest) {
        let (head, after) = rest.split_at(pos);
        out.push_str(head);
        let eq = after.find('=').unwrap_or(0);
        out.push_str(&after[..=eq]);
        let value = after[eq + 1..].trim_start();
        out.push_str(HIDDEN);
        rest = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote that is not escaped.
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            &quoted[end..]
        } else {
            &value[value.find(char::is_whitespace).unwrap_or(value.len())..]
        };
    }
    out.push_str(rest);
    out
}

/// Where `password` starts as a key (`password=` with optional spaces).
fn find_password_key(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        let starts_word = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[at + "password".len()..].trim_start();
        if starts_word && after.starts_with('=') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_password_is_split_out_for_pgpassword() {
        let u =
            DatabaseUrl::new("postgres://gantry:p%40ss%2Fw@db.example:5432/gantry?sslmode=require");
        assert_eq!(
            u.split_password(),
            (
                "postgres://gantry@db.example:5432/gantry?sslmode=require".to_owned(),
                Some("p@ss/w".to_owned())
            )
        );
        let u = DatabaseUrl::new("postgres://gantry@db/gantry");
        assert_eq!(
            u.split_password(),
            ("postgres://gantry@db/gantry".to_owned(), None)
        );
        let u = DatabaseUrl::new("host=/tmp dbname=gantry password='se cret' user=g");
        assert_eq!(
            u.split_password(),
            (
                "host=/tmp dbname=gantry user=g".to_owned(),
                Some("se cret".to_owned())
            )
        );
    }

    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form_of_url() {
        for (url, shown) in [
            (
                "postgres://gantry:s3cret@db.example:5432/gantry",
                "postgres://gantry:***@db.example:5432/gantry",
            ),
            (
                "postgresql://gantry:p@ss/w?rd@db/gantry?sslmode=disable",
                "postgresql://gantry:***@db/gantry?sslmode=disable",
            ),
            (
                "postgres://gantry@db/gantry?password=s3cret&application_name=x",
                "postgres://gantry@db/gantry?password=***&application_name=x",
            ),
            ("postgres://db/gantry", "postgres://db/gantry"),
            (
                "postgres://db/x?password=s3cret&options=a@b",
                "postgres://db/x?password=***&options=a@b",
            ),
            (
                "host=/tmp user=gantry password=s3cret dbname=gantry",
                "host=/tmp user=gantry password=*** dbname=gantry",
            ),
            (
                "host=db password = 'it\\'s s3cret' dbname=x",
                "host=db password =*** dbname=x",
            ),
        ] {
            let u = DatabaseUrl::new(url);
            assert_eq!(u.to_string(), shown, "{url}");
            assert!(!format!("{u:?}").contains("s3cret"), "{url}");
            assert!(!format!("{u:?}").contains("rd@"), "{url}");
            assert_eq!(u.expose(), url);
        }
    }
}
