//! Starts a real server (Debian's `postgresql` package), creates a database and connects.

use testpg::TestPg;

#[test]
fn starts_creates_a_database_and_connects_then_stops_and_restarts() {
    let mut pg = TestPg::start().expect("start PostgreSQL");
    pg.create_database("relay_test").expect("createdb");
    let url = pg.url("relay_test");
    assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let row = client
        .query_one("SELECT current_database(), 1 + 1", &[])
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "relay_test");
    assert_eq!(row.get::<_, i32>(1), 2);
    drop(client);

    pg.restart().expect("restart");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("reconnect");
    client
        .execute("CREATE TABLE t (x INT)", &[])
        .expect("write");
    pg.kill().expect("kill");
    assert!(client.query("SELECT 1", &[]).is_err(), "the server is gone");
    // A crash: the next start recovers the committed table from the write-ahead log.
    pg.start_again().expect("start after a crash");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("reconnect");
    client
        .query("SELECT x FROM t", &[])
        .expect("the table survived");
    let dir = pg.data_dir();
    drop(pg);
    assert!(!dir.exists(), "the directory is removed on drop");
}
