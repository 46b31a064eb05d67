//! How holdfast runs SQL: always as the **unnamed statement**, parameter types sent with the
//! query (tokio-postgres `query_typed`: Parse, Bind, Describe, Execute, Sync in one round trip).
//!
//! Why: in AWS the functions reach PostgreSQL through RDS Proxy, and locally and in CI through
//! PgBouncer in transaction pooling mode; either may hand each transaction (and each statement
//! outside one) a different server connection. A named prepared statement is session state:
//! tokio-postgres's `query("…")` prepares one and executes it in two round trips, which can land
//! on two server connections ("prepared statement \"s3\" does not exist"), and a per-connection
//! statement cache (deadpool's `prepare_cached`) keeps names across transactions, which pins a
//! proxy session. The unnamed statement lives only until the next Parse on the same server
//! connection, inside one message flight, so it is correct under any pooler and costs one round
//! trip, the same as executing a cached statement. What it gives up is the server's plan cache:
//! every execution is parsed and planned (docs/deploy.md, "Connection pooling").
//!
//! The parameter types come from the Rust values ([`PgType`]): `Uuid` is `uuid`, `&str` and
//! `String` are `text`, `i64` is `int8`, `Option<T>` is `T`'s type, `Vec<T>` its array.
//! Several statements may be pipelined on one connection (`tokio::join!` of these futures:
//! each sends on its first poll, in order, and the client waits once).

use std::future::Future;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

/// A Rust type with one PostgreSQL parameter type.
pub trait PgType {
    const TYPE: Type;
}

/// A [`PgType`] with an array type (for `Vec<T>` and `&[T]` parameters).
pub trait PgElement: PgType {
    const ARRAY: Type;
}

macro_rules! pg_types {
    ($($t:ty => $ty:ident, $array:ident;)*) => {$(
        impl PgType for $t {
            const TYPE: Type = Type::$ty;
        }
        impl PgElement for $t {
            const ARRAY: Type = Type::$array;
        }
    )*};
}

pg_types! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    uuid::Uuid => UUID, UUID_ARRAY;
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    chrono::NaiveDateTime => TIMESTAMP, TIMESTAMP_ARRAY;
    chrono::NaiveDate => DATE, DATE_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
}

impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T: PgElement> PgElement for Option<T> {
    const ARRAY: Type = T::ARRAY;
}

impl<T: PgType> PgType for &T {
    const TYPE: Type = T::TYPE;
}

impl<T: PgElement> PgType for Vec<T> {
    const TYPE: Type = T::ARRAY;
}

impl<T: PgElement> PgType for &[T] {
    const TYPE: Type = T::ARRAY;
}

/// A query parameter: its value and its PostgreSQL type.
pub trait Param: Sync {
    fn value(&self) -> &(dyn ToSql + Sync);
    fn pg_type(&self) -> Type;
}

impl<T: PgType + ToSql + Sync> Param for T {
    fn value(&self) -> &(dyn ToSql + Sync) {
        self
    }

    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.value(), p.pg_type())).collect()
}

/// A connection or a transaction, running every statement as the unnamed statement. Implemented
/// for deadpool's pooled client and transaction and tokio-postgres's (a transaction's
/// statements are its client's: only `commit`/`rollback` differ).
pub trait Sql: Sync {
    fn pg_client(&self) -> &tokio_postgres::Client;

    /// All rows.
    fn fetch<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a {
        async move { self.pg_client().query_typed(sql, &typed(params)).await }
    }

    /// Exactly one row (an error otherwise).
    fn fetch_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a dyn Param],
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a {
        async move { self.pg_client().query_typed_one(sql, &typed(params)).await }
    }

    /// At most one row (an error if more).
    fn fetch_opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a {
        async move { self.pg_client().query_typed_opt(sql, &typed(params)).await }
    }

    /// Rows affected.
    fn run<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a dyn Param],
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a {
        async move { self.pg_client().execute_typed(sql, &typed(params)).await }
    }
}

impl Sql for tokio_postgres::Client {
    fn pg_client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl Sql for tokio_postgres::Transaction<'_> {
    fn pg_client(&self) -> &tokio_postgres::Client {
        self.client()
    }
}

impl Sql for deadpool_postgres::ClientWrapper {
    fn pg_client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl Sql for deadpool_postgres::Client {
    fn pg_client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl Sql for deadpool_postgres::Transaction<'_> {
    fn pg_client(&self) -> &tokio_postgres::Client {
        self.client()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_types_follow_the_rust_types() {
        let id = uuid::Uuid::nil();
        let now = chrono::Utc::now();
        let cases: [(&dyn Param, Type); 9] = [
            (&id, Type::UUID),
            (&Some(id), Type::UUID),
            (&None::<uuid::Uuid>, Type::UUID),
            (&"text", Type::TEXT),
            (&Some("text"), Type::TEXT),
            (&vec![Some(id), None], Type::UUID_ARRAY),
            (&vec!["a", "b"], Type::TEXT_ARRAY),
            (&now, Type::TIMESTAMPTZ),
            (&serde_json::json!({}), Type::JSONB),
        ];
        for (i, (param, want)) in cases.iter().enumerate() {
            assert_eq!(param.pg_type(), *want, "case {i}");
        }
        let (small, int, big, float): (i16, i32, i64, f64) = (1, 2, 3, 4.0);
        let numbers: [&dyn Param; 4] = [&small, &int, &big, &float];
        let types: Vec<Type> = numbers.iter().map(|p| p.pg_type()).collect();
        assert_eq!(types, [Type::INT2, Type::INT4, Type::INT8, Type::FLOAT8]);
    }
}
