//! `user`: create, get, list and update users, persisted in `users.db`.
//!
//! Emails are validated and unique (case-insensitively); every rule broken is answered
//! `bad_request` with a message that says which.

use rusqlite::{OptionalExtension, params};
use switchboard_protocol::sdk::{HandlerError, Service};

use crate::{
    model::{ById, NewUser, Page, User, UserList, UserUpdate},
    store::{Store, StoreError, now_ms},
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (email COLLATE NOCASE);
";

const NAME_MAX: usize = 100;
const EMAIL_MAX: usize = 254;

pub fn service() -> Result<Service, StoreError> {
    let store = Store::open("users.db", SCHEMA, &[])?;
    let (create, get, list, update) = (store.clone(), store.clone(), store.clone(), store);
    Ok(Service::new("user", env!("CARGO_PKG_VERSION"))
        .method("create", move |_ctx, new: NewUser| {
            let store = create.clone();
            async move { create_user(&store, new).await }
        })
        .method("get", move |ctx, ById { id }| {
            let store = get.clone();
            async move {
                store
                    .read_now(ctx.received(), |c| Ok(find(c, id)?))?
                    .ok_or_else(|| HandlerError::not_found(format!("no user {id}")))
            }
        })
        .method("list", move |_ctx, page: Page| {
            let store = list.clone();
            async move { Ok::<_, HandlerError>(list_users(&store, page).await?) }
        })
        .method("update", move |_ctx, change: UserUpdate| {
            let store = update.clone();
            async move { update_user(&store, change).await }
        }))
}

/// The name, trimmed, or why it is not acceptable.
pub fn valid_name(name: &str) -> Result<String, HandlerError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(HandlerError::bad_request("name must not be empty"));
    }
    if name.chars().count() > NAME_MAX {
        return Err(HandlerError::bad_request(format!(
            "name is longer than {NAME_MAX} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(HandlerError::bad_request(
            "name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The email, trimmed, if it is well formed: `local@domain.tld`, no spaces, at most 254 bytes.
/// (Not the full RFC 5322 grammar, which accepts addresses no mail system delivers to.)
pub fn valid_email(email: &str) -> Result<String, HandlerError> {
    let email = email.trim();
    let bad = |why: &str| Err(HandlerError::bad_request(format!("email `{email}` {why}")));
    if email.len() > EMAIL_MAX {
        return bad("is longer than 254 bytes");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("has no `@`");
    };
    if local.is_empty() || domain.contains('@') {
        return bad("must be one local part, `@`, and a domain");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return bad("needs a domain like example.com");
    }
    Ok(email.to_owned())
}

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        created_at_ms: row.get(3)?,
    })
}

fn find(c: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<User>> {
    // Cached: a point read is the hot path (every order checks its user), and parsing the SQL
    // again each time cost more than the read.
    c.prepare_cached("SELECT id, name, email, created_at_ms FROM users WHERE id = ?1")?
        .query_row([id], row_to_user)
        .optional()
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

async fn create_user(store: &Store, new: NewUser) -> Result<User, HandlerError> {
    let name = valid_name(&new.name)?;
    let email = valid_email(&new.email)?;
    let taken = email.clone();
    let created = store
        .write(move |c| {
            let at = now_ms();
            match c.execute(
                "INSERT INTO users (name, email, created_at_ms) VALUES (?1, ?2, ?3)",
                params![name, email, at],
            ) {
                Ok(_) => Ok(Some(User {
                    id: c.last_insert_rowid(),
                    name,
                    email,
                    created_at_ms: at,
                })),
                Err(err) if is_unique_violation(&err) => Ok(None),
                Err(err) => Err(err.into()),
            }
        })
        .await?;
    created
        .ok_or_else(|| HandlerError::bad_request(format!("email `{taken}` is already registered")))
}

async fn update_user(store: &Store, change: UserUpdate) -> Result<User, HandlerError> {
    let id = change.id;
    let name = change.name.as_deref().map(valid_name).transpose()?;
    let email = change.email.as_deref().map(valid_email).transpose()?;
    let taken = email.clone();
    store
        .run(move |c| {
            let tx = c.transaction()?;
            let Some(mut user) = find(&tx, id)? else {
                return Ok(Err(HandlerError::not_found(format!("no user {id}"))));
            };
            if let Some(name) = name {
                user.name = name;
            }
            if let Some(email) = email {
                user.email = email;
            }
            match tx.execute(
                "UPDATE users SET name = ?2, email = ?3 WHERE id = ?1",
                params![id, user.name, user.email],
            ) {
                Ok(_) => {}
                Err(err) if is_unique_violation(&err) => {
                    return Ok(Err(HandlerError::bad_request(format!(
                        "email `{}` is already registered",
                        taken.unwrap_or_default()
                    ))));
                }
                Err(err) => return Err(err.into()),
            }
            tx.commit()?;
            Ok(Ok(user))
        })
        .await?
}

async fn list_users(store: &Store, page: Page) -> Result<UserList, StoreError> {
    let limit = page.limit();
    store
        .run(move |c| {
            let total = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
            let mut statement = c.prepare(
                "SELECT id, name, email, created_at_ms FROM users WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut users = statement
                .query_map(params![page.after, limit + 1], row_to_user)?
                .collect::<Result<Vec<_>, _>>()?;
            // One row more than asked says whether another page follows.
                let next = if users.len() > limit as usize {
                    users.truncate(limit as usize);
                    users.last().map(|u| u.id)
                } else {
                    None
                };
            Ok(UserList { users, total, next })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in [
            "a@b.co",
            "ada.lovelace+x@example.org",
            " padded@example.com ",
        ] {
            assert!(valid_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            "a@b.com@c.com",
        ] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
        assert!(valid_email(&format!("{}@example.com", "x".repeat(250))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(valid_name("  Ada ").unwrap(), "Ada");
        assert!(valid_name("   ").is_err());
        assert!(valid_name("a\u{7}b").is_err());
        assert!(valid_name(&"x".repeat(101)).is_err());
    }
}
