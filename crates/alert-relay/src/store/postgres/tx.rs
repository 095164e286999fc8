//! A write's transaction (a savepoint of the batch's) with the connection's prepared
//! statements: each SQL text is parsed once per connection, then only bound and executed
//! (one round trip per statement instead of two).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};

/// Prepared statements by SQL text. Statements belong to one connection: cleared when it is
/// replaced.
pub(super) type Cache = HashMap<String, Statement>;

pub(super) struct Tx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    cache: &'a mut Cache,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a, 'b> Tx<'a, 'b> {
    pub(super) fn new(tx: &'a mut Transaction<'b>, cache: &'a mut Cache) -> Self {
        Tx { tx, cache }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.cache.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query(&s, params)
    }

    pub(super) fn query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query_one(&s, params)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.query_opt(&s, params)
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.tx.execute(&s, params)
    }
}
