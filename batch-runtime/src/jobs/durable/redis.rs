//! The Redis store: one Redis server shared by every process, through
//! apalis-redis.
//!
//! # What to install and configure
//!
//! A Redis server, 6.2 or later (apalis' scripts use `ZADD GT`), that
//! every dispatching and worker process reaches, named by a
//! `redis://[:password@]host[:port][/db]` URL; the password is used and
//! never shown ([`DurableStore::location`] leaves it out). `rediss://`
//! (TLS) needs one of the `redis` crate's TLS features, which
//! batch-runtime does not enable: add `redis = { version = "1", features
//! = ["tokio-rustls-comp"] }` to the application to get it. A single
//! server or a replicated primary: not Redis Cluster, since apalis'
//! scripts touch keys that do not share a hash slot. Nothing else:
//! apalis-redis has no schema, its keys are created by its own scripts on
//! first use, so opening is idempotent by construction (it checks that
//! the server answers).
//!
//! # Where jobs live: apalis' keys
//!
//! For the queue `q` ([`DurableStore::queue`], default
//! [`DEFAULT_QUEUE`](super::DEFAULT_QUEUE)) apalis-redis keeps:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `q:data` | hash | job id → the stored envelope (job name and JSON) |
//! | `q:meta:<id>` | hash | the job's status, attempts, lock, last result |
//! | `q:scheduled` | sorted set | jobs waiting for their time (every push lands here, due now or later) |
//! | `q:active` | list | due jobs waiting for a worker |
//! | `q:inflight:<worker>` | set | jobs a worker took and has not finished |
//! | `q:workers` | sorted set | live workers by last heartbeat |
//! | `q:done`, `q:dead` | sets | succeeded jobs, failed jobs |
//! | `q:signal` | list | apalis' "jobs available" marker |
//!
//! [`DurableStore::counts`] reads them in one script: pending is
//! `q:active` plus `q:scheduled`, running the workers' `q:inflight:*`
//! sets, failed `q:dead`, done `q:done`. apalis' own `Metrics` cannot be
//! used for this (its script reads `q:done` and `q:dead` as sorted sets,
//! which apalis' result script writes as plain sets, and counts a
//! `q:inflight` key no worker writes), nor `ListTasks` for the failed
//! list (it reads a list named after the queue itself, not `q:dead`);
//! [`DurableStore::failed_jobs`] and [`DurableStore::retry`] are scripts of
//! their own on the same keys, written like apalis' `release_leases`
//! script (a retried job is taken out of `q:dead`, its status reset to
//! `Pending`, pushed on `q:active` and the signal raised, atomically).
//! Done jobs keep their data in `q:data` and `q:meta:<id>` until removed
//! (apalis' `Vacuum`).
//!
//! # What "stored" means, and what survives
//!
//! A dispatch returns once the server acknowledged apalis' push script:
//! the job is in the server's memory, and survives this process (and any
//! worker) being killed. Whether it survives the Redis server restarting
//! is the server's persistence: with `appendonly yes` and `appendfsync
//! always` every acknowledged push survives; with the default
//! `appendfsync everysec` up to a second of pushes can be lost on a
//! power cut; with RDB snapshots only, everything since the last
//! snapshot; with neither (`save ""`, `appendonly no`, as on this
//! project's test machine) a Redis restart loses every job. Use a
//! Redis configured for durability, or the PostgreSQL store.
//!
//! # Heartbeats and jobs of a dead worker
//!
//! A worker registers in `q:workers` and beats there; each beat also
//! re-enqueues the jobs of every worker whose last beat is too old
//! (apalis' `reenqueue_orphaned` script), so a job running on a worker
//! that died runs again on a live worker: delivery is at-least-once,
//! de-duplicate on [`stored_id`](super::stored_id). apalis-redis records
//! beats in whole seconds of each worker's clock and takes a worker for
//! dead when `floor(now) - floor(last beat) >= timeout`. So that a worker
//! is only taken for dead after more than two heartbeat intervals of
//! silence, whatever the rounding, the timeout given to apalis is
//! `ceil(2 x interval) + 1 s` and workers beat 12 times per timeout (every
//! 250 ms for a 1 s interval, about 5 s for the default 30 s): the jobs of
//! a dead worker run again between `2 x interval` and `2 x interval + 2 s`
//! (plus one beat and one poll) after its last beat. The clocks of the
//! machines running workers must agree to well under the interval (NTP).
//!
//! Every run of a worker registers under the name given to
//! [`Jobs::durable_worker`](crate::jobs::Jobs::durable_worker) with a
//! unique suffix: a worker restarted under the same name after a crash
//! registers at once (apalis refuses a name still beating) and the jobs
//! of the dead run are recovered by the timeout above. A worker that
//! stopped gracefully removes itself from `q:workers`.
//!
//! A job's execution that failed (its attempts, backoff and `failed`
//! hook ran, see the module docs of `durable`) is handed to apalis as an
//! abort, so apalis files it in `q:dead` with its last error instead of
//! rescheduling it (apalis-redis reschedules a plain failure up to 25
//! times, whatever the task's `max_attempts`).
//!
//! # Timeouts, outages and `close`
//!
//! Connecting (at open and on every reconnect) times out after
//! [`CONNECT_TIMEOUT`] and is tried [`CONNECT_TRIES`] times, a little
//! apart; each command times out after [`RESPONSE_TIMEOUT`]. A dispatch
//! while the server is down or unreachable therefore fails within
//! about `RESPONSE_TIMEOUT` or `CONNECT_TRIES x CONNECT_TIMEOUT` (refused
//! connections fail at once), with an error naming the store and the
//! step; on `failover` the job then runs deferred. The connection is
//! re-established by the next command once the server is back. A worker
//! whose heartbeat or fetch fails stops with an error (apalis'
//! behaviour): run workers under a supervisor that restarts them.
//!
//! All handles opened by one [`DurableStore::redis`] call (and those
//! derived with `queue`, `heartbeat`, `poll_interval`) share one
//! multiplexed connection. [`DurableStore::close`] marks it closed: every
//! later command through it fails at once with "the store was closed"
//! (dispatch, counts, and the heartbeat of a worker on it, which then
//! stops with an error); commands already sent complete. The socket
//! itself closes once the last handle using it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, Value};
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::TaskSink;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};

use super::worker::{handle_stored, Shared};
use super::{
    redacted_location, Backend, DurableStore, Envelope, FailedJob, StoreBackend, StoreCounts,
    StoreError, DEFAULT_HEARTBEAT, DEFAULT_QUEUE,
};

/// How long connecting to the Redis server may take, at open and on
/// every reconnect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many times connecting is tried before a command fails (100 ms and
/// then up to 200 ms apart).
pub const CONNECT_TRIES: usize = 2;

/// How long one command (a push, a count, a worker's fetch or heartbeat)
/// may wait for the server's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many heartbeats a worker sends per orphan timeout; see the module
/// docs.
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
    queue: String,
    heartbeat: Duration,
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

/// Makes the failed job ARGV[1] pending again, as apalis'
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
    /// apalis' config for `queue` with our heartbeat `interval`: workers
    /// beat [`BEATS_PER_TIMEOUT`] times per orphan timeout of
    /// `ceil(2 x interval) + 1 s` (see the module docs).
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

    fn reconfigured(&self, queue: &str, heartbeat: Duration) -> Self {
        RedisBackend {
            storage: self
                .storage
                .clone()
                .with_config(Self::config(queue, heartbeat)),
            conn: self.conn.clone(),
            queue: queue.to_owned(),
            heartbeat,
        }
    }

    fn config_ref(&self) -> &Config {
        self.storage.get_config()
    }
}

impl DurableStore {
    /// Connects to the Redis server at `url` (`redis://[:password@]host
    /// [:port][/db]`) and keeps batch jobs in apalis-redis' keys there;
    /// see the `redis` module docs for the keys, timeouts and what
    /// survives a Redis restart. Needs the `durable-redis` feature.
    ///
    /// ```no_run
    /// use batch_runtime::jobs::durable::DurableStore;
    /// # async fn open() -> Result<(), batch_runtime::jobs::durable::StoreError> {
    /// let store = DurableStore::redis("redis://127.0.0.1:6379").await?;
    /// # Ok(()) }
    /// ```
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
        let backend = RedisBackend {
            storage,
            conn,
            queue: DEFAULT_QUEUE.to_owned(),
            heartbeat: DEFAULT_HEARTBEAT,
        };
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
        // Retries run inside one stored execution (see the module docs).
        let mut task = TaskBuilder::new(envelope)
            .task_id(TaskId::from_ulid(id))
            .max_attempts(1);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        let mut storage = self.storage.clone();
        storage.push_task(task.build()).await?;
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

    fn with_heartbeat(&self, interval: Duration) -> Self {
        self.reconfigured(&self.queue, interval)
    }

    fn with_queue(&self, queue: &str) -> Self {
        self.reconfigured(queue, self.heartbeat)
    }

    async fn run_worker<C: Send + Sync + 'static>(
        &self,
        name: String,
        poll_interval: Duration,
        shared: Arc<Shared<C>>,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Result<(), BoxDynError> {
        // A name of this run's own (see the module docs).
        let name = format!("{name}-{}", ulid::Ulid::generate());
        let worker = WorkerBuilder::new(name.clone())
            .backend(self.storage.clone().poll_with_interval(poll_interval))
            .data(shared)
            .build(handle_once::<C>);
        worker
            .run_until(async move {
                signal.await;
                Ok::<(), std::io::Error>(())
            })
            .await?;
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
