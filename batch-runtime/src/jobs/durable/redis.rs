//! The Redis store: one Redis server shared by every process, through
//! apalis-redis. What users need to know (install, keys, what survives,
//! heartbeats, timeouts, `close`) is on [`DurableStore::redis`]; these
//! are the notes for maintainers on where this module departs from
//! apalis-redis' own APIs, and why.
//!
//! - Counts, the failed list and retry are Lua scripts of this module on
//!   apalis' keys (taken from its `Config`). apalis' `Metrics` cannot
//!   count: its `overview_by_queue.lua` reads `q:done` and `q:dead` with
//!   `ZCARD` while `handle_results.lua` writes them with `SADD`, and it
//!   counts a `q:inflight` key no worker writes (they write
//!   `q:inflight:<worker>`). `ListTasks` reads a list named after the
//!   queue itself rather than `q:active`, and `ListAllTasks` pages through
//!   every job of the queue before filtering. The retry script does what
//!   apalis' `release_leases.lua` does to a released job, atomically.
//! - `handle_results.lua` reschedules a `Failed` result up to 25 times
//!   whatever the task's `max_attempts` (a TODO in apalis); our handler
//!   returns the failure of a stored execution as an `AbortError`, which
//!   apalis records as `Killed` in `q:dead`.
//! - Beats are whole seconds (`current_timestamp()` of each worker) and a
//!   worker is orphaned when `floor(now) - floor(beat) >= timeout`: the
//!   `Config` built here keeps a live worker from being taken for dead
//!   (see [`RedisBackend::config`]).
//! - `register_worker.lua` refuses a name that beat within the timeout
//!   and the register step re-enqueues the jobs of a same-named worker
//!   whose beat is older than one beat period: `DurableWorker` gives
//!   each run a name of its own (a ULID suffix). apalis' clean-up at a graceful stop `ZREM`s the
//!   inflight set's key instead of the worker's name: the `UNREGISTER`
//!   script here removes the name.
//! - A `ConnectionManager` cannot be closed while clones of it live:
//!   [`StoreConn`] refuses every command once closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, Value};
use apalis_core::backend::TaskSink;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_redis::{Config, RedisStorage};

use super::worker::{handle_stored, Shared};
use super::{
    redacted_location, stored_task, Backend, DurableStore, Envelope, FailedJob, RunStarted,
    StoreBackend, StoreCounts, StoreError, DEFAULT_HEARTBEAT, DEFAULT_QUEUE,
};

/// How long connecting to the Redis server may take, at open and on
/// every reconnect (documented on [`DurableStore::redis`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many times connecting is tried before a command fails (100 to
/// 200 ms apart).
const CONNECT_TRIES: usize = 2;

/// How long one command (a push, a count, a worker's fetch or heartbeat)
/// may wait for the server's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many heartbeats a worker sends per orphan timeout; see
/// [`RedisBackend::config`].
const BEATS_PER_TIMEOUT: u32 = 12;

/// The connection every handle of one opened store shares, refusing every
/// command once [`DurableStore::close`] was called.
#[derive(Clone)]
pub(crate) struct StoreConn {
    manager: ConnectionManager,
    closed: Arc<AtomicBool>,
}

impl StoreConn {
    fn closed_error() -> RedisError {
        RedisError::from((
            ErrorKind::Client,
            "the store was closed",
            "DurableStore::close() was called".to_owned(),
        ))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl ConnectionLike for StoreConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if self.is_closed() {
            return Box::pin(async { Err(StoreConn::closed_error()) });
        }
        self.manager.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if self.is_closed() {
            return Box::pin(async { Err(StoreConn::closed_error()) });
        }
        self.manager.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}

#[derive(Clone)]
pub(crate) struct RedisBackend {
    storage: RedisStorage<Envelope, StoreConn>,
    conn: StoreConn,
}

/// This queue's jobs by state: `{pending, running, failed, done}`.
static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] active list, KEYS[2] scheduled zset, KEYS[3] workers zset,
-- KEYS[4] inflight set prefix, KEYS[5] dead set, KEYS[6] done set
local pending = redis.call("llen", KEYS[1]) + redis.call("zcard", KEYS[2])
local running = 0
for _, worker in ipairs(redis.call("zrange", KEYS[3], 0, -1)) do
    running = running + redis.call("scard", KEYS[4] .. ":" .. worker)
end
return {pending, running, redis.call("scard", KEYS[5]), redis.call("scard", KEYS[6])}
"#,
    )
});

/// The failed jobs, by id (ULIDs: oldest first): `{id, data, result}`.
static FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] dead set, KEYS[2] data hash, KEYS[3] meta prefix
local ids = redis.call("smembers", KEYS[1])
table.sort(ids)
local failed = {}
for _, id in ipairs(ids) do
    local data = redis.call("hget", KEYS[2], id)
    local result = redis.call("hget", KEYS[3] .. ":" .. id, "result")
    table.insert(failed, {id, data, result})
end
return failed
"#,
    )
});

/// Makes the failed job `ARGV[1]` pending again, as apalis'
/// `release_leases` script does for a released job; 1 if it was failed.
static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] dead set, KEYS[2] data hash, KEYS[3] meta prefix,
-- KEYS[4] active list, KEYS[5] signal list; ARGV[1] the job id
local id = ARGV[1]
if redis.call("sismember", KEYS[1], id) == 0 or redis.call("hexists", KEYS[2], id) == 0 then
    return 0
end
redis.call("srem", KEYS[1], id)
local meta = KEYS[3] .. ":" .. id
redis.call("hset", meta, "status", "Pending", "attempts", 0)
redis.call("hdel", meta, "result", "done_at", "locked_at", "locked_by")
redis.call("rpush", KEYS[4], id)
redis.call("del", KEYS[5])
redis.call("lpush", KEYS[5], 1)
return 1
"#,
    )
});

/// Removes a worker that stopped gracefully from the live workers, if it
/// holds no job (apalis' own clean-up removes the wrong member).
static UNREGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] workers zset, KEYS[2] the worker's inflight set,
-- KEYS[3] the worker's metadata hash; ARGV[1] the worker's name
if redis.call("scard", KEYS[2]) == 0 then
    redis.call("zrem", KEYS[1], ARGV[1])
    redis.call("del", KEYS[3])
    return 1
end
return 0
"#,
    )
});

impl RedisBackend {
    /// apalis' config for `queue` with our heartbeat `interval`.
    ///
    /// apalis-redis takes a worker for dead when `floor(now) -
    /// floor(last beat) >= heartbeat_interval x missed_heartbeats` (whole
    /// seconds), so a timeout of `2 x interval` would orphan a worker that
    /// beat as little as `2 x interval - 1 s` ago, and with a beat every
    /// `interval` a live worker's beat is up to one interval old: with a
    /// 1 s interval, any delay of a beat would orphan a live worker (and
    /// run its jobs twice). Here the timeout is `ceil(2 x interval) + 1 s`
    /// (silence of more than `2 x interval` before a worker is taken for
    /// dead) and workers beat [`BEATS_PER_TIMEOUT`] times per timeout.
    fn config(queue: &str, interval: Duration) -> Config {
        let two = interval.saturating_mul(2);
        let timeout_secs = two.as_secs() + u64::from(two.subsec_nanos() > 0) + 1;
        let timeout_ms = timeout_secs.saturating_mul(1000);
        // Rounded up, so that beat x BEATS_PER_TIMEOUT >= the timeout, in
        // whole seconds as apalis reads it.
        let beat_ms = timeout_ms.div_ceil(u64::from(BEATS_PER_TIMEOUT));
        Config::default()
            .queue(queue)
            .heartbeat_interval(Duration::from_millis(beat_ms))
            .missed_heartbeats(BEATS_PER_TIMEOUT as usize)
    }

    fn config_ref(&self) -> &Config {
        self.storage.get_config()
    }
}

impl DurableStore {
    /// Connects to the Redis server at `url` and keeps this store's jobs
    /// in apalis-redis' keys there. Needs the `durable-redis` feature.
    ///
    /// ```no_run
    /// use batch_runtime::jobs::durable::DurableStore;
    /// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
    /// let store = DurableStore::redis("redis://:secret@10.0.0.5:6379/0").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # What to install and configure
    ///
    /// A Redis server, 6.2 or later (apalis' scripts use `ZADD GT`), that
    /// every dispatching and worker process reaches, named by a
    /// `redis://[:password@]host[:port][/db]` URL; the password is used
    /// and never shown ([`location`](DurableStore::location) leaves it
    /// out). `rediss://` (TLS) needs one of the `redis` crate's TLS
    /// features, which batch-runtime does not enable: add `redis = {
    /// version = "1", features = ["tokio-rustls-comp"] }` to the
    /// application. A single server or a replicated primary, not Redis
    /// Cluster (apalis' scripts touch keys in different hash slots).
    /// Nothing to set up: apalis-redis has no schema, its scripts create
    /// their keys on first use, so opening only checks that the server
    /// answers (and is idempotent).
    ///
    /// # Where jobs live
    ///
    /// For the queue `q` ([`queue`](DurableStore::queue), default
    /// [`DEFAULT_QUEUE`]):
    ///
    /// | key | type | holds |
    /// |---|---|---|
    /// | `q:data` | hash | job id → the stored job (its name and JSON) |
    /// | `q:meta:<id>` | hash | the job's status, attempts, lock and last result |
    /// | `q:scheduled` | sorted set | jobs by the time they may run (every dispatch lands here) |
    /// | `q:active` | list | due jobs waiting for a worker |
    /// | `q:inflight:<worker>` | set | jobs a worker took and has not finished |
    /// | `q:workers` | sorted set | workers by their last heartbeat |
    /// | `q:done`, `q:dead` | sets | succeeded jobs, failed jobs |
    /// | `q:signal` | list | apalis' "jobs available" marker |
    ///
    /// [`counts`](DurableStore::counts) reads them in one script: pending
    /// is `q:scheduled` plus `q:active`, running the workers' inflight
    /// sets (a dead worker's jobs count as running until they are taken
    /// back), failed `q:dead`, done `q:done`. Finished jobs keep their
    /// data and meta keys until removed (apalis' `Vacuum`).
    ///
    /// # What "stored" means, and what survives
    ///
    /// A dispatch returns once the server acknowledged apalis' push
    /// script: the job is in the server's memory and survives this
    /// process, and any worker, being killed. Whether it survives the
    /// Redis server restarting is the server's persistence: with
    /// `appendonly yes` and `appendfsync always` every acknowledged job
    /// survives; with the default `appendfsync everysec` up to about a
    /// second of jobs can be lost if the machine fails; with RDB
    /// snapshots only, everything since the last snapshot; with neither
    /// (`save ""` and `appendonly no`) a Redis restart loses every job.
    /// For jobs that must not be lost, configure Redis for durability or
    /// use the PostgreSQL store.
    ///
    /// # Heartbeats and the jobs of a dead worker
    ///
    /// A worker beats in `q:workers`; each beat also puts back on
    /// `q:active` the jobs of every worker whose last beat is too old, so
    /// a job running on a worker that died runs again on a live one
    /// (at-least-once: de-duplicate on [`stored_id`](super::stored_id)).
    /// apalis-redis records beats in whole seconds of each worker's clock,
    /// so that only a worker silent for more than two
    /// [`heartbeat`](DurableStore::heartbeat) intervals is taken for dead,
    /// the timeout given to apalis is `ceil(2 x interval) + 1 s`, and
    /// workers beat 12 times per timeout (every 250 ms for a 1 s interval,
    /// about every 5 s for the default 30 s). A dead worker's jobs run
    /// again between `2 x interval` and `2 x interval + 2 s` (plus one
    /// beat and one poll) after its last beat: 61 to 63 s with the
    /// default. The clocks of the machines running workers must agree to
    /// well under the interval (NTP).
    ///
    /// Each run of a worker registers under the name given to
    /// [`Jobs::durable_worker`](crate::jobs::Jobs::durable_worker) with a
    /// unique suffix: replicas started with one name run side by side,
    /// and a worker restarted under its name right after a crash starts
    /// at once (the jobs of the dead run are taken back after the timeout
    /// above). A worker that stopped gracefully leaves `q:workers`.
    ///
    /// # Timeouts, outages and `close`
    ///
    /// Connecting (at open and on every reconnect) times out after 3 s
    /// and is tried twice, 100 to 200 ms apart; each command times out
    /// after 5 s. A dispatch while the server is down or unreachable
    /// therefore fails within about 5 to 7 s (at once when the
    /// connection is refused) with an error naming the store and the
    /// step; on `failover` the job then runs deferred. The next command
    /// reconnects once the server is back. A worker whose heartbeat or
    /// fetch fails ends its run with an error, as apalis' workers do, and
    /// starts a new one, with backoff, until the server is back (see
    /// [`DurableWorker::run_until`](super::DurableWorker::run_until)).
    ///
    /// The handles of one `redis` call, and those made from them with
    /// `queue`, `heartbeat` or `poll_interval`, share one multiplexed
    /// connection. [`close`](DurableStore::close) marks it closed: every
    /// later command through it fails at once saying "the store was
    /// closed" (dispatches, counts, and the next heartbeat or fetch of a
    /// worker on it, which then stops with an error; the jobs it had
    /// taken run again elsewhere after the timeout above). Commands
    /// already sent complete. The socket closes when the last handle is
    /// dropped. Another `redis` call opens a connection of its own.
    pub async fn redis(url: &str) -> Result<DurableStore, StoreError> {
        let location = redacted_location(url);
        let client =
            Client::open(url).map_err(|e| StoreError::new(&location, "reading the URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_TRIES - 1)
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::new(&location, "connecting to the server", e))?;
        let mut conn = StoreConn {
            manager,
            closed: Arc::new(AtomicBool::new(false)),
        };
        // apalis-redis creates its keys on first use: nothing to set up,
        // but the server must answer commands (authenticated, right db).
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| StoreError::new(&location, "checking the server", e))?;
        let storage = RedisStorage::new(conn.clone())
            .with_config(RedisBackend::config(DEFAULT_QUEUE, DEFAULT_HEARTBEAT));
        let backend = RedisBackend { storage, conn };
        Ok(DurableStore::from_backend(
            Backend::Redis(backend),
            location,
        ))
    }
}

/// One stored execution, whose failure is final: apalis-redis would
/// reschedule a plain error (see the module docs), an abort goes to the
/// failed jobs with its message.
async fn handle_once<C: Send + Sync + 'static>(
    envelope: Envelope,
    shared: Data<Arc<Shared<C>>>,
    task_id: TaskId,
) -> Result<(), AbortError> {
    handle_stored::<C>(envelope, shared, task_id)
        .await
        .map_err(AbortError::new)
}

/// The last error as apalis-redis keeps it: the JSON of the handler's
/// `Result<_, String>`, the message prefixed by the abort.
fn last_error(result: Option<String>) -> Option<String> {
    let result = result?;
    match serde_json::from_str::<Result<serde_json::Value, String>>(&result) {
        Ok(Err(message)) => Some(
            message
                .strip_prefix("AbortError: ")
                .map(str::to_owned)
                .unwrap_or(message),
        ),
        _ => Some(result),
    }
}

impl StoreBackend for RedisBackend {
    async fn push(
        &self,
        envelope: Envelope,
        id: ulid::Ulid,
        delay: Option<Duration>,
    ) -> Result<(), BoxDynError> {
        let task = stored_task(envelope, id, delay);
        let mut storage = self.storage.clone();
        storage.push_task(task).await?;
        Ok(())
    }

    async fn counts(&self) -> Result<StoreCounts, BoxDynError> {
        let config = self.config_ref();
        let (pending, running, failed, done): (u64, u64, u64, u64) = COUNTS
            .key(config.active_jobs_list())
            .key(config.scheduled_jobs_set())
            .key(config.workers_set())
            .key(config.inflight_jobs_set())
            .key(config.dead_jobs_set())
            .key(config.done_jobs_set())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(StoreCounts {
            pending,
            running,
            failed,
            done,
        })
    }

    async fn failed_jobs(&self) -> Result<Vec<FailedJob>, BoxDynError> {
        let config = self.config_ref();
        let rows: Vec<(String, Option<Vec<u8>>, Option<String>)> = FAILED
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .key(config.job_meta_hash())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, data, result)| {
                FailedJob::from_stored(id, &data.unwrap_or_default(), last_error(result))
            })
            .collect())
    }

    async fn retry(&self, id: &str) -> Result<bool, BoxDynError> {
        let config = self.config_ref();
        let retried: u32 = RETRY
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .key(config.job_meta_hash())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(retried == 1)
    }

    async fn close(&self) {
        self.conn.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn configured(&self, queue: &str, heartbeat: Duration) -> Self {
        RedisBackend {
            storage: self
                .storage
                .clone()
                .with_config(Self::config(queue, heartbeat)),
            conn: self.conn.clone(),
        }
    }

    async fn run_worker<C: Send + Sync + 'static>(
        &self,
        name: String,
        poll_interval: Duration,
        shared: Arc<Shared<C>>,
        started: RunStarted,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Result<(), BoxDynError> {
        // `name` is this run's own: `DurableWorker` adds a ULID to it.
        run_apalis_worker!(
            self.storage,
            name.clone(),
            poll_interval,
            shared,
            started,
            signal,
            handle_once::<C>
        )?;
        let config = self.config_ref();
        let unregistered = UNREGISTER
            .key(config.workers_set())
            .key(format!("{}:{name}", config.inflight_jobs_set()))
            .key(format!("{}:workers:metadata:{name}", config.queue.as_ref()))
            .arg(&name)
            .invoke_async::<u32>(&mut self.conn.clone())
            .await;
        if let Err(e) = unregistered {
            // Not an error of the run: other workers drop this one from
            // the live workers once its heartbeat is missed.
            tracing::debug!(worker = %name, error = %e, "could not unregister a stopped worker");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_dead_only_after_more_than_two_intervals_in_whole_seconds() {
        for (interval, timeout_secs) in [
            (Duration::from_secs(1), 3),
            (Duration::from_secs(30), 61),
            (Duration::from_millis(1500), 4),
            (Duration::from_millis(1300), 4),
        ] {
            let config = RedisBackend::config("q", interval);
            // apalis compares whole seconds: `floor(now) - floor(beat) >=
            // timeout`, so the silence is more than `timeout - 1 s`.
            assert_eq!(
                config.orphaned_duration().as_secs(),
                timeout_secs,
                "{interval:?}"
            );
            assert!(
                Duration::from_secs(timeout_secs - 1) >= interval * 2,
                "{interval:?}"
            );
            assert!(
                config.heartbeat_interval * 4 <= interval * 2,
                "{interval:?}: several beats per two intervals"
            );
        }
    }

    #[test]
    fn the_last_error_is_the_message_without_the_abort() {
        assert_eq!(
            last_error(Some(
                r#"{"Err":"AbortError: the payment provider said no"}"#.into()
            )),
            Some("the payment provider said no".to_owned())
        );
        assert_eq!(last_error(None), None);
        assert_eq!(
            last_error(Some("not json".into())),
            Some("not json".to_owned())
        );
    }
}
