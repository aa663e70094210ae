//! The domain: users register, users place orders. Small on purpose, but real:
//! rows in the main database, validation, and the domain events that the rest
//! of the service reacts to.
//!
//! Every write here takes the unit of work's connection, so it happens in the
//! request's one transaction, and records the event it causes in the same
//! place: an event exists exactly when its write commits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::unit_of_work::UnitOfWork;

/// Something that happened in the domain and that other parts react to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum DomainEvent {
    UserRegistered {
        user_id: i64,
        email: String,
        name: String,
    },
    OrderPlaced {
        order_id: i64,
        user_id: i64,
        email: String,
        total_cents: i64,
        item_count: i64,
    },
}

impl DomainEvent {
    /// A name unique to this occurrence, the same whoever computes it and
    /// however often: the idempotency key of every side effect it causes.
    pub(crate) fn key(&self) -> String {
        match self {
            DomainEvent::UserRegistered { user_id, .. } => format!("user-{user_id}-registered"),
            DomainEvent::OrderPlaced { order_id, .. } => format!("order-{order_id}-placed"),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            DomainEvent::UserRegistered { .. } => "user_registered",
            DomainEvent::OrderPlaced { .. } => "order_placed",
        }
    }
}

/// Input that breaks a domain rule; the API answers 422.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("a user with email {0:?} is already registered")]
    EmailTaken(String),
    #[error("user {0} does not exist")]
    UnknownUser(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Registration {
    pub(crate) email: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub(crate) struct OrderItem {
    pub(crate) sku: String,
    pub(crate) quantity: i32,
    pub(crate) unit_price_cents: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NewOrder {
    pub(crate) user_id: i64,
    pub(crate) items: Vec<OrderItem>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Order {
    pub(crate) id: i64,
    pub(crate) user_id: i64,
    pub(crate) total_cents: i64,
    pub(crate) items: Vec<OrderItem>,
    pub(crate) created_at: DateTime<Utc>,
}

/// The longest email address SMTP carries (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;
const MAX_NAME_LEN: usize = 200;
const MAX_ITEMS: usize = 100;

impl Registration {
    fn validate(&self) -> Result<(String, String), DomainError> {
        let email = self.email.trim().to_lowercase();
        let name = self.name.trim().to_string();
        if email.len() > MAX_EMAIL_LEN || email.parse::<lettre::Address>().is_err() {
            return Err(DomainError::Invalid(format!(
                "{} is not an email address",
                dawdle::text::quote(&self.email)
            )));
        }
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(DomainError::Invalid(format!(
                "name must have 1 to {MAX_NAME_LEN} characters"
            )));
        }
        // A name is written into email headers; line breaks there would let
        // a user inject headers of their own.
        if name.chars().any(char::is_control) {
            return Err(DomainError::Invalid(
                "name must not contain control characters".into(),
            ));
        }
        Ok((email, name))
    }
}

impl NewOrder {
    fn total_cents(&self) -> Result<i64, DomainError> {
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return Err(DomainError::Invalid(format!(
                "an order has 1 to {MAX_ITEMS} items"
            )));
        }
        let mut total: i64 = 0;
        for item in &self.items {
            if item.sku.trim().is_empty() || item.sku.len() > 64 {
                return Err(DomainError::Invalid("sku must have 1 to 64 bytes".into()));
            }
            if item.quantity < 1 || item.unit_price_cents < 0 {
                return Err(DomainError::Invalid(format!(
                    "item {:?}: quantity must be at least 1 and the price not negative",
                    item.sku
                )));
            }
            total = item
                .unit_price_cents
                .checked_mul(i64::from(item.quantity))
                .and_then(|line| total.checked_add(line))
                .ok_or_else(|| DomainError::Invalid("the order total is too large".into()))?;
        }
        Ok(total)
    }
}

/// Registers a user and records `UserRegistered`.
pub(crate) async fn register_user(
    work: &mut UnitOfWork,
    registration: &Registration,
) -> Result<User, DomainError> {
    let (email, name) = registration.validate()?;
    let inserted: Result<User, sqlx::Error> = sqlx::query_as(
        "INSERT INTO users (email, name) VALUES ($1, $2)
         RETURNING id, email, name, created_at",
    )
    .bind(&email)
    .bind(&name)
    .fetch_one(work.connection())
    .await;
    let user = match inserted {
        Ok(user) => user,
        Err(error) if is_unique_violation(&error, "users_email_key") => {
            return Err(DomainError::EmailTaken(email))
        }
        Err(error) => return Err(error.into()),
    };
    work.record(DomainEvent::UserRegistered {
        user_id: user.id,
        email: user.email.clone(),
        name: user.name.clone(),
    });
    Ok(user)
}

/// Places an order for an existing user and records `OrderPlaced`.
pub(crate) async fn place_order(
    work: &mut UnitOfWork,
    new_order: &NewOrder,
) -> Result<Order, DomainError> {
    let total_cents = new_order.total_cents()?;
    // FOR SHARE: the user cannot be deleted under the order being written.
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1 FOR SHARE")
            .bind(new_order.user_id)
            .fetch_optional(work.connection())
            .await?;
    let email = email.ok_or(DomainError::UnknownUser(new_order.user_id))?;
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO orders (user_id, total_cents) VALUES ($1, $2) RETURNING id, created_at",
    )
    .bind(new_order.user_id)
    .bind(total_cents)
    .fetch_one(work.connection())
    .await?;
    let skus: Vec<&str> = new_order.items.iter().map(|item| item.sku.trim()).collect();
    let quantities: Vec<i32> = new_order.items.iter().map(|item| item.quantity).collect();
    let prices: Vec<i64> = new_order
        .items
        .iter()
        .map(|item| item.unit_price_cents)
        .collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
         SELECT $1, item.position, item.sku, item.quantity, item.unit_price_cents
         FROM unnest($2::text[], $3::int4[], $4::int8[])
              WITH ORDINALITY AS item (sku, quantity, unit_price_cents, position)",
    )
    .bind(id)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .execute(work.connection())
    .await?;
    let items: Vec<OrderItem> = new_order
        .items
        .iter()
        .map(|item| OrderItem {
            sku: item.sku.trim().to_string(),
            ..item.clone()
        })
        .collect();
    work.record(DomainEvent::OrderPlaced {
        order_id: id,
        user_id: new_order.user_id,
        email,
        total_cents,
        item_count: items.len() as i64,
    });
    Ok(Order {
        id,
        user_id: new_order.user_id,
        total_cents,
        items,
        created_at,
    })
}

pub(crate) async fn find_user(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, name, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub(crate) async fn find_order(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<Order>, sqlx::Error> {
    let order: Option<(i64, i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT user_id, total_cents, created_at FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((user_id, total_cents, created_at)) = order else {
        return Ok(None);
    };
    let items: Vec<OrderItem> = sqlx::query_as(
        "SELECT sku, quantity, unit_price_cents FROM order_items
         WHERE order_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(Some(Order {
        id,
        user_id,
        total_cents,
        items,
        created_at,
    }))
}

fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.kind() == sqlx::error::ErrorKind::UniqueViolation && db.constraint() == Some(constraint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(email: &str, name: &str) -> Registration {
        Registration {
            email: email.into(),
            name: name.into(),
        }
    }

    #[test]
    fn registrations_are_normalised_and_checked() {
        let (email, name) = registration(" Ada@Example.COM ", " Ada ")
            .validate()
            .unwrap();
        assert_eq!((email.as_str(), name.as_str()), ("ada@example.com", "Ada"));
        assert!(registration("not-an-address", "Ada").validate().is_err());
        assert!(registration("ada@example.com", "  ").validate().is_err());
        let injected = registration("ada@example.com", "Ada\r\nBcc: all@example.com");
        assert!(injected.validate().is_err());
    }

    #[test]
    fn a_bad_address_is_quoted_in_short() {
        let huge = format!("{}\"\n@", "a".repeat(10_000));
        let message = registration(&huge, "Ada")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(message.len() < 100, "{message}");
        assert!(
            message.ends_with("…\" is not an email address"),
            "{message}"
        );
        let message = registration("a\"b\n", "Ada")
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(message, r#""a\"b\n" is not an email address"#);
    }

    #[test]
    fn order_totals_add_up_and_reject_nonsense() {
        let item = |sku: &str, quantity, unit_price_cents| OrderItem {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        };
        let order = |items| NewOrder { user_id: 1, items };
        assert_eq!(
            order(vec![item("a", 2, 150), item("b", 1, 99)])
                .total_cents()
                .unwrap(),
            399
        );
        assert!(order(vec![]).total_cents().is_err());
        assert!(order(vec![item("a", 0, 1)]).total_cents().is_err());
        assert!(order(vec![item("a", 1, -1)]).total_cents().is_err());
        assert!(order(vec![item("a", i32::MAX, i64::MAX)])
            .total_cents()
            .is_err());
    }

    #[test]
    fn event_keys_name_the_occurrence() {
        let event = DomainEvent::OrderPlaced {
            order_id: 7,
            user_id: 1,
            email: "a@example.com".into(),
            total_cents: 100,
            item_count: 1,
        };
        assert_eq!(event.key(), "order-7-placed");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "order_placed");
        assert_eq!(serde_json::from_value::<DomainEvent>(json).unwrap(), event);
    }
}
