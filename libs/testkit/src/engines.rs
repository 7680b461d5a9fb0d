//! Finding PostgreSQL and Redis: `PIM_TEST_DATABASE_URL` / `PIM_TEST_REDIS_URL`, then the local
//! servers on their standard ports, then throwaway instances from the installed binaries.

use std::{net::TcpStream, sync::OnceLock, time::Duration};

use crate::{postgres::throwaway_postgres, redis_server::RedisServer};

fn reachable(addr: &str) -> bool {
    addr.parse()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The URL of a PostgreSQL server where tests may create databases (connects to `postgres`).
pub fn postgres_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("PIM_TEST_DATABASE_URL") {
            return url;
        }
        if reachable("127.0.0.1:5432") {
            return "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
        }
        throwaway_postgres().unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// The URL of a Redis server the tests share (each test uses its own key prefix).
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("PIM_TEST_REDIS_URL") {
            return url;
        }
        if reachable("127.0.0.1:6379") {
            return "redis://127.0.0.1:6379".to_owned();
        }
        // Leaked on purpose: it serves every test of this process and dies with it.
        let server = RedisServer::spawn_blocking().unwrap_or_else(|e| panic!("{e}"));
        let url = server.url();
        std::mem::forget(server);
        url
    })
    .clone()
}
