//! What can go wrong between voxtap and the database, sorted by what to do about it: wait and retry (the server
//! or the network is away), give up at once (the server refuses this user: the configuration or the GRANTs must
//! change), or set one CDR aside (the server refuses a value). Each kind is told to the operator once, with the
//! address and what to check.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DbError {
    /// The server or the connection is away: try the same batch again later.
    #[error("database unavailable: {}", cause(.0))]
    Unavailable(#[source] mysql_async::Error),
    /// The server refuses this user (password, privileges, database): no retry helps until the configuration or
    /// the server's GRANTs change.
    #[error("database access refused: {}", cause(.0))]
    Denied(#[source] mysql_async::Error),
    /// The server refused the statement (a bad value): retrying it as it is will not help.
    #[error("database refused the statement: {}", cause(.0))]
    Refused(#[source] mysql_async::Error),
}

/// Server errors that refuse this user rather than a statement: access denied (1045, and 1698 for an
/// authentication plugin), no access to the database (1044), an unknown database voxtap could not create
/// (1049), a privilege missing on a table or column (1142, 1143).
const DENIED: &[u16] = &[1044, 1045, 1049, 1142, 1143, 1698];

impl From<mysql_async::Error> for DbError {
    fn from(e: mysql_async::Error) -> Self {
        match e {
            mysql_async::Error::Server(ref s) if DENIED.contains(&s.code) => DbError::Denied(e),
            // Deadlock, lock wait, too many connections, read-only server, server shutting down: the server is
            // there but cannot take the batch now.
            mysql_async::Error::Server(ref s) if matches!(s.code, 1205 | 1213 | 1040 | 1053 | 1290 | 1927) => {
                DbError::Unavailable(e)
            }
            mysql_async::Error::Server(_) => DbError::Refused(e),
            other => DbError::Unavailable(other),
        }
    }
}

/// The error in a few words: the driver's wrappers ("Input/output error: Input/output error: …") say nothing an
/// operator needs, and would repeat the system's own text.
pub fn cause(e: &mysql_async::Error) -> String {
    match e {
        // The system's own text (or the TLS library's), without the driver's wrapper.
        mysql_async::Error::Io(io) => std::error::Error::source(io).map_or_else(|| io.to_string(), |s| s.to_string()),
        mysql_async::Error::Server(s) => format!("MySQL error {}: {}", s.code, s.message),
        mysql_async::Error::Driver(d) => d.to_string(),
        mysql_async::Error::Other(o) => o.to_string(),
        mysql_async::Error::Url(u) => u.to_string(),
    }
}

/// Who and where, for the operator's sentences.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, or the socket path.
    pub at: String,
    pub user: String,
    pub db: String,
}

impl DbError {
    /// The operator's sentence: what happened, where, and what to check.
    pub fn explain(&self, t: &Target) -> String {
        let Target { at, user, db } = t;
        // The privileges docs/database.md asks for: creating the database and its tables, daily partitions, rows.
        let grant = format!(
            "GRANT CREATE, ALTER, INDEX, SELECT, INSERT, UPDATE ON `{db}`.* TO '{user}'@'<this host>' on the server"
        );
        match self {
            DbError::Denied(e) => {
                let code = match e {
                    mysql_async::Error::Server(s) => s.code,
                    _ => 0,
                };
                let why = cause(e);
                match code {
                    1045 | 1698 => format!(
                        "the database at {at} refused user '{user}' ({why}): check mysqlusername and mysqlpassword, \
                         and that this user may connect from this host (CREATE USER / GRANT on the server)"
                    ),
                    1044 => format!(
                        "the database at {at} does not let user '{user}' use database '{db}' ({why}): {grant} \
                         (voxtap creates the database and its tables when it may), or set mysqldb to a database \
                         this user has"
                    ),
                    1049 => format!(
                        "database '{db}' does not exist at {at} and user '{user}' may not create it ({why}): create \
                         it, or {grant}"
                    ),
                    _ => format!("user '{user}' lacks a privilege voxtap needs at {at} ({why}): {grant}"),
                }
            }
            // The server answered but cannot take the batch now (a deadlock, too many connections, read-only).
            DbError::Unavailable(e @ mysql_async::Error::Server(_)) => {
                format!("the database at {at} cannot store CDRs now: {}", cause(e))
            }
            DbError::Unavailable(e) => format!("the database at {at} is not reachable: {}", cause(e)),
            DbError::Refused(e) => format!("the database at {at} refused a statement: {}", cause(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError { code, message: message.into(), state: "28000".into() })
    }

    #[test]
    fn sorted_by_what_to_do() {
        assert!(matches!(DbError::from(server(1045, "Access denied")), DbError::Denied(_)));
        assert!(matches!(DbError::from(server(1044, "Access denied")), DbError::Denied(_)));
        assert!(matches!(DbError::from(server(1213, "Deadlock")), DbError::Unavailable(_)));
        assert!(matches!(DbError::from(server(1366, "Incorrect value")), DbError::Refused(_)));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(DbError::from(mysql_async::Error::from(io)), DbError::Unavailable(_)));
    }

    #[test]
    fn sentences_name_the_place_and_the_os_error_once() {
        let t = Target { at: "127.0.0.1:3999".into(), user: "voxtap".into(), db: "voipmonitor".into() };
        let io = std::io::Error::from_raw_os_error(111);
        let text = io.to_string();
        let said = DbError::from(mysql_async::Error::from(io)).explain(&t);
        assert_eq!(said.matches(&text).count(), 1, "{said}");
        assert!(said.starts_with("the database at 127.0.0.1:3999 is not reachable"), "{said}");
        let said = DbError::from(server(1045, "Access denied for user 'voxtap'@'h' (using password: YES)")).explain(&t);
        assert!(said.contains("refused user 'voxtap'") && said.contains("mysqlpassword"), "{said}");
        let said = DbError::from(server(1044, "Access denied")).explain(&t);
        assert!(said.contains("UPDATE ON `voipmonitor`.* TO 'voxtap'"), "{said}");
    }
}
