//! The PostgreSQL password file (`~/.pgpass`, or the file `PGPASSFILE` names), read the way
//! libpq reads it: one `hostname:port:database:username:password` per line, `*` matching
//! anything in the first four fields, `\:` and `\\` escaping, lines starting with `#` ignored,
//! the first matching line wins. The file is refused if others can read it (libpq ignores such
//! a file; a vault refuses to start, so the mistake is seen).

use zeroize::Zeroizing;

/// The longest password file read (libpq has no limit; a real one is a few lines).
pub const MAX_PGPASS_LEN: usize = 64 * 1024;

/// What a password is looked up for.
#[derive(Clone, Copy, Debug)]
pub struct PgpassQuery<'a> {
    /// Host name, IP address or Unix socket directory, as in the connection URL.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: &'a str,
    /// User name.
    pub user: &'a str,
}

/// Splits one line into its fields, unescaping `\:` and `\\`; `None` for a line that does not
/// have exactly five fields.
fn fields(line: &str) -> Option<[Zeroizing<String>; 5]> {
    let mut out: [Zeroizing<String>; 5] = Default::default();
    let mut i = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out[i].push(n),
                None => out[i].push('\\'),
            },
            ':' if i < 4 => i += 1,
            c => out[i].push(c),
        }
    }
    (i == 4).then_some(out)
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// The password of the first line of `text` that matches `q`, if any. A line is matched
/// field by field, `*` matching anything; `localhost` also matches a Unix socket directory
/// (as libpq does for the default socket).
pub fn lookup(text: &str, q: &PgpassQuery<'_>) -> Option<Zeroizing<String>> {
    if text.len() > MAX_PGPASS_LEN {
        return None;
    }
    let port = q.port.to_string();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some([host, p, db, user, password]) = fields(line) else {
            continue;
        };
        let host_ok = matches(&host, q.host) || (*host == "localhost" && q.host.starts_with('/'));
        if host_ok && matches(&p, &port) && matches(&db, q.database) && matches(&user, q.user) {
            return Some(password);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q<'a>(host: &'a str, database: &'a str, user: &'a str) -> PgpassQuery<'a> {
        PgpassQuery {
            host,
            port: 5432,
            database,
            user,
        }
    }

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.internal:5432:vault:app:first\n\
                    *:5432:vault:*:wild\\:card\\\\\n\
                    *:*:*:*:fallback\n";
        let got = |h, d, u| lookup(text, &q(h, d, u)).map(|p| p.to_string());
        assert_eq!(got("db.internal", "vault", "app").as_deref(), Some("first"));
        assert_eq!(got("other", "vault", "ops").as_deref(), Some("wild:card\\"));
        assert_eq!(got("other", "other", "ops").as_deref(), Some("fallback"));
        assert_eq!(lookup("h:1:d:u\n", &q("h", "d", "u")), None);
    }

    #[test]
    fn localhost_matches_a_socket_directory_and_crlf_is_tolerated() {
        let text = "localhost:5432:vault:app:sock\r\n";
        assert_eq!(
            lookup(text, &q("/run/postgresql", "vault", "app")).map(|p| p.to_string()),
            Some("sock".to_owned())
        );
        assert_eq!(lookup(text, &q("10.0.0.1", "vault", "app")), None);
    }

    proptest::proptest! {
        /// A password written with libpq's escaping comes back verbatim from a line that
        /// matches, and a line for another user never answers.
        #[test]
        fn escaped_passwords_round_trip(password in "[ -~]{0,40}", user in "[a-z]{1,8}") {
            let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
            let text = format!("h:5432:d:{user}x:nope\nh:5432:d:{user}:{escaped}\n");
            let got = lookup(&text, &q("h", "d", &user)).map(|p| p.to_string());
            proptest::prop_assert_eq!(got, Some(password));
        }

    }
}
