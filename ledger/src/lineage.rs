//! Lineage: how an output row came to be, read from projection indexes (never a scan of
//! the log). A query starts from a source row, a token, or the N-th row written to a sink,
//! and returns the source rows, the whole token family involved (full ancestry and every
//! descendant, so a row that forked shows every branch), each token's states with their
//! calls, routes, batch membership and terminal outcome, and the sinks' artifacts.

use crate::error::{LedgerError, Result};
use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::ledger::Ledger;
use crate::projection::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where a lineage query starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineageQuery {
    /// Source row index, from 0.
    Row(u64),
    Token(TokenId),
    /// The N-th row (from 0) written to a sink.
    Output {
        sink: NodeId,
        ordinal: u64,
    },
}

/// Tokens gathered past this are listed by id only, so a query on a huge batch stays
/// bounded.
pub const MAX_TOKENS: usize = 10_000;

#[derive(Clone, Debug, Serialize)]
pub struct Lineage {
    pub run: String,
    pub query: String,
    /// The token the query resolved to.
    pub focus: String,
    pub source_rows: Vec<SourceRow>,
    /// The token family, parents before children.
    pub tokens: Vec<TokenLineage>,
    pub batches: Vec<BatchLineage>,
    pub artifacts: Vec<Artifact>,
    /// Tokens beyond `MAX_TOKENS`, named but not expanded.
    pub truncated: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceRow {
    pub row: u64,
    pub source: String,
    pub hash: String,
    pub value: Option<Value>,
    pub validation_error: Option<String>,
    pub seq: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenLineage {
    pub token: String,
    pub row: Option<u64>,
    /// source | fork | expand | coalesce | batch
    pub origin: String,
    /// Branch name (fork), element index (expand), node (coalesce) or batch id.
    pub origin_detail: Option<String>,
    pub parents: Vec<String>,
    pub children: Vec<String>,
    pub states: Vec<StateLineage>,
    pub routes: Vec<RouteLineage>,
    pub batches: Vec<String>,
    pub outcome: Option<OutcomeLineage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StateLineage {
    pub state: String,
    pub node: String,
    pub attempt: u32,
    /// open | completed | failed
    pub status: String,
    pub error: Option<String>,
    pub input_hash: String,
    pub output_hash: Option<String>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub duration_us: u64,
    pub opened_seq: u64,
    pub closed_seq: Option<u64>,
    pub calls: Vec<CallLineage>,
    /// A batch state's calls made for member tokens outside this lineage: counted, not
    /// listed, so that a member row's lineage shows its own call. Left out of JSON when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub other_calls: u32,
    /// What the pooled executor's throttle did for this state's calls, if a pool served
    /// it. Left out of JSON when none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolLineage>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolLineage {
    pub capacity_retries: u64,
    pub peak_delay_us: u64,
    pub throttled_us: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CallLineage {
    pub index: u32,
    pub kind: String,
    pub served: Option<String>,
    pub request_hash: String,
    pub response_hash: Option<String>,
    /// responded | errored | pending
    pub status: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub latency_us: Option<u64>,
    pub request: Option<Value>,
    pub response: Option<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RouteLineage {
    pub node: String,
    pub attempt: u32,
    pub label: String,
    pub to: Vec<String>,
    pub seq: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutcomeLineage {
    pub outcome: String,
    pub sink: Option<String>,
    pub ordinal: Option<u64>,
    pub detail: Option<String>,
    pub seq: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchLineage {
    pub batch: String,
    pub node: String,
    pub members: Vec<String>,
    pub trigger: Option<String>,
    pub state: Option<String>,
    /// open | transform | passthrough | failed
    pub status: String,
    pub states: Vec<StateLineage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    pub sink: String,
    pub path: String,
    pub content_hash: String,
    pub size: u64,
    pub rows: u64,
    pub seq: u64,
}

impl Ledger {
    fn proj<T>(
        &self,
        run: &RunId,
        key: PKey,
        pick: impl FnOnce(PVal) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.store().get_proj(run, &key)? {
            None => Ok(None),
            Some(v) => pick(v).map(Some).ok_or_else(|| {
                LedgerError::Corrupt(format!("projection {key:?} holds the wrong kind"))
            }),
        }
    }

    fn token_rec(&self, run: &RunId, id: &TokenId) -> Result<Option<TokenRec>> {
        self.proj(run, PKey::Token(id.clone()), |v| match v {
            PVal::Token(t) => Some(t),
            _ => None,
        })
    }

    /// The token written as the `ordinal`-th row of `sink`.
    pub fn sink_row(&self, run: &RunId, sink: &NodeId, ordinal: u64) -> Result<Option<TokenId>> {
        let chunk = self.proj(
            run,
            PKey::SinkChunk(sink.clone(), ordinal / SINK_CHUNK),
            |v| match v {
                PVal::SinkChunk(c) => Some(c),
                _ => None,
            },
        )?;
        Ok(chunk.and_then(|c| c.get((ordinal % SINK_CHUNK) as usize).cloned()))
    }

    /// Answers a lineage query. `Ok(None)` when the row, token or output does not exist.
    pub fn lineage(&self, run: &RunId, query: &LineageQuery) -> Result<Option<Lineage>> {
        let focus = match query {
            LineageQuery::Row(r) => {
                if self.row_rec(run, *r)?.is_none() {
                    return Ok(None);
                }
                TokenId::for_row(*r)
            }
            LineageQuery::Token(t) => t.clone(),
            LineageQuery::Output { sink, ordinal } => match self.sink_row(run, sink, *ordinal)? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let Some(focus_rec) = self.token_rec(run, &focus)? else {
            return Ok(None);
        };
        let family = self.family(run, &focus, focus_rec)?;
        self.assemble(run, query, &focus, family).map(Some)
    }

    fn row_rec(&self, run: &RunId, row: u64) -> Result<Option<RowRec>> {
        self.proj(run, PKey::Row(row), |v| match v {
            PVal::Row(r) => Some(r),
            _ => None,
        })
    }

    /// The focus token's ancestors (all the way up) and descendants (all the way down),
    /// ordered by creation.
    fn family(&self, run: &RunId, focus: &TokenId, focus_rec: TokenRec) -> Result<Family> {
        let mut fam = Family::default();
        fam.insert(focus.clone(), focus_rec);
        // Up: every ancestor.
        let mut queue: VecDeque<TokenId> = VecDeque::from([focus.clone()]);
        while let Some(t) = queue.pop_front() {
            let parents = fam.get(&t).map(|r| r.parents.clone()).unwrap_or_default();
            for p in parents {
                if fam.contains(&p) {
                    continue;
                }
                if fam.full() {
                    fam.truncated.insert(p.to_string());
                    continue;
                }
                if let Some(rec) = self.token_rec(run, &p)? {
                    fam.insert(p.clone(), rec);
                    queue.push_back(p);
                }
            }
        }
        // Down: the focus's own subtree (every fork branch, expansion, merge). Siblings of
        // an ancestor are not followed: they are not how this token came to be.
        let mut queue: VecDeque<TokenId> = VecDeque::from([focus.clone()]);
        while let Some(t) = queue.pop_front() {
            let children = fam.get(&t).map(|r| r.children.clone()).unwrap_or_default();
            for c in children {
                if fam.contains(&c) {
                    continue;
                }
                if fam.full() {
                    fam.truncated.insert(c.to_string());
                    continue;
                }
                if let Some(rec) = self.token_rec(run, &c)? {
                    fam.insert(c.clone(), rec);
                    queue.push_back(c);
                }
            }
        }
        Ok(fam)
    }

    fn assemble(
        &self,
        run: &RunId,
        query: &LineageQuery,
        focus: &TokenId,
        fam: Family,
    ) -> Result<Lineage> {
        let mut rows = BTreeSet::new();
        let mut batches = BTreeSet::new();
        let mut sinks = BTreeSet::new();
        let mut tokens = Vec::with_capacity(fam.order.len());
        let mut ordered: Vec<(&TokenId, &TokenRec)> = fam
            .order
            .iter()
            .filter_map(|t| fam.get(t).map(|r| (t, r)))
            .collect();
        ordered.sort_by(|a, b| (a.1.created_seq, a.0).cmp(&(b.1.created_seq, b.0)));
        for (id, rec) in ordered {
            if rec.origin == Origin::Source {
                if let Some(r) = rec.row {
                    rows.insert(r);
                }
            }
            batches.extend(rec.batches.iter().cloned());
            if let Some((Terminal::Outcome(o), _)) = &rec.terminal {
                if let Some(w) = o.write() {
                    sinks.insert(w.sink.clone());
                }
            }
            tokens.push(self.token_lineage(run, id, rec)?);
        }
        let mut source_rows = Vec::new();
        for r in rows {
            if let Some(rec) = self.row_rec(run, r)? {
                source_rows.push(SourceRow {
                    row: r,
                    source: rec.source.to_string(),
                    hash: rec.payload.to_hex(),
                    value: self.payload_value(run, &rec.payload)?,
                    validation_error: rec.validation_error,
                    seq: rec.seq,
                });
            }
        }
        let mut batch_out = Vec::new();
        for b in batches {
            if let Some(bl) = self.batch_lineage(run, &b, &fam)? {
                batch_out.push(bl);
            }
        }
        let mut artifacts = Vec::new();
        for s in sinks {
            artifacts.extend(self.artifacts(run, &s)?);
        }
        Ok(Lineage {
            run: run.to_string(),
            query: describe(query),
            focus: focus.to_string(),
            source_rows,
            tokens,
            batches: batch_out,
            artifacts,
            truncated: fam.truncated.into_iter().collect(),
        })
    }

    /// Every artifact recorded for a sink, in order.
    pub fn artifacts(&self, run: &RunId, sink: &NodeId) -> Result<Vec<Artifact>> {
        let Some(node) = self.proj(run, PKey::Node(sink.clone()), |v| match v {
            PVal::Node(n) => Some(n),
            _ => None,
        })?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for i in 0..node.artifacts {
            let a = self.proj(run, PKey::Artifact(sink.clone(), i), |v| match v {
                PVal::Artifact(a) => Some(a),
                _ => None,
            })?;
            if let Some(a) = a {
                out.push(Artifact {
                    sink: sink.to_string(),
                    path: a.path,
                    content_hash: a.content_hash.to_hex(),
                    size: a.size,
                    rows: a.rows,
                    seq: a.seq,
                });
            }
        }
        Ok(out)
    }

    fn token_lineage(&self, run: &RunId, id: &TokenId, rec: &TokenRec) -> Result<TokenLineage> {
        let (origin, origin_detail) = match &rec.origin {
            Origin::Source => ("source", None),
            Origin::Fork { branch } => ("fork", Some(branch.clone())),
            Origin::Expand { index } => ("expand", Some(index.to_string())),
            Origin::Coalesce { node } => ("coalesce", Some(node.to_string())),
            Origin::Batch { batch } => ("batch", Some(batch.to_string())),
        };
        let subject = Subject::Token(id.clone());
        let mut states = Vec::with_capacity(rec.states.len());
        for s in &rec.states {
            states.push(self.state_lineage(run, &subject, s, None)?);
        }
        Ok(TokenLineage {
            token: id.to_string(),
            row: rec.row,
            origin: origin.to_string(),
            origin_detail,
            parents: rec.parents.iter().map(|t| t.to_string()).collect(),
            children: rec.children.iter().map(|t| t.to_string()).collect(),
            states,
            routes: rec
                .routes
                .iter()
                .map(|r| RouteLineage {
                    node: r.node.to_string(),
                    attempt: r.attempt,
                    label: r.label.clone(),
                    to: r.to.iter().map(|n| n.to_string()).collect(),
                    seq: r.seq,
                })
                .collect(),
            batches: rec.batches.iter().map(|b| b.to_string()).collect(),
            outcome: rec
                .terminal
                .as_ref()
                .map(|(t, seq)| outcome_lineage(t, *seq)),
        })
    }

    /// A state and its calls. `shown`: for a batch state, the tokens whose calls to list
    /// (those of the lineage); calls made for other members are only counted.
    fn state_lineage(
        &self,
        run: &RunId,
        subject: &Subject,
        s: &StateRec,
        shown: Option<&Family>,
    ) -> Result<StateLineage> {
        let id = StateId {
            subject: subject.clone(),
            node: s.node.clone(),
            attempt: s.attempt,
        };
        let (status, error, output) = match &s.status {
            StateStatus::Open => ("open", None, None),
            StateStatus::Completed { output } => ("completed", None, Some(*output)),
            StateStatus::Failed { error, .. } => ("failed", Some(error.clone()), None),
        };
        let mut calls = Vec::with_capacity(s.calls as usize);
        let mut other_calls = 0;
        for i in 0..s.calls {
            let call = self.proj(run, PKey::Call(id.clone(), i), |v| match v {
                PVal::Call(c) => Some(c),
                _ => None,
            })?;
            if let Some(c) = call {
                let elsewhere = match (&c.served, shown) {
                    (Some(t), Some(fam)) => !fam.contains(t),
                    _ => false,
                };
                if elsewhere {
                    other_calls += 1;
                } else {
                    calls.push(self.call_lineage(run, i, c)?);
                }
            }
        }
        let pool = self
            .proj(run, PKey::Pool(id.clone()), |v| match v {
                PVal::Pool(p) => Some(p),
                _ => None,
            })?
            .map(|p| PoolLineage {
                capacity_retries: p.capacity_retries,
                peak_delay_us: p.peak_delay_us,
                throttled_us: p.throttled_us,
                seq: p.seq,
            });
        Ok(StateLineage {
            state: id.to_string(),
            node: s.node.to_string(),
            attempt: s.attempt,
            status: status.to_string(),
            error,
            input_hash: s.input.to_hex(),
            output_hash: output.map(|h| h.to_hex()),
            input: self.payload_value(run, &s.input)?,
            output: match output {
                Some(h) => self.payload_value(run, &h)?,
                None => None,
            },
            duration_us: s.duration_us,
            opened_seq: s.opened_seq,
            closed_seq: s.closed_seq,
            calls,
            other_calls,
            pool,
        })
    }

    fn call_lineage(&self, run: &RunId, index: u32, c: CallRec) -> Result<CallLineage> {
        let (status, http_status, error, latency, response) = match &c.completion {
            None => ("pending", None, None, None, None),
            Some(done) => match &done.outcome {
                crate::event::CallOutcome::Responded { status } => (
                    "responded",
                    *status,
                    None,
                    Some(done.latency_us),
                    done.response,
                ),
                crate::event::CallOutcome::Errored { error, .. } => (
                    "errored",
                    None,
                    Some(error.clone()),
                    Some(done.latency_us),
                    done.response,
                ),
            },
        };
        Ok(CallLineage {
            index,
            kind: c.kind,
            served: c.served.map(|t| t.to_string()),
            request_hash: c.request.to_hex(),
            response_hash: response.map(|h| h.to_hex()),
            status: status.to_string(),
            http_status,
            error,
            latency_us: latency,
            request: self.payload_value(run, &c.request)?,
            response: match response {
                Some(h) => self.payload_value(run, &h)?,
                None => None,
            },
        })
    }

    fn batch_lineage(
        &self,
        run: &RunId,
        id: &BatchId,
        fam: &Family,
    ) -> Result<Option<BatchLineage>> {
        let Some(b) = self.proj(run, PKey::Batch(id.clone()), |v| match v {
            PVal::Batch(b) => Some(b),
            _ => None,
        })?
        else {
            return Ok(None);
        };
        let mut members = Vec::with_capacity(b.members as usize);
        for i in 0..b.members {
            if let Some(t) = self.proj(run, PKey::Member(id.clone(), i), |v| match v {
                PVal::Member(t) => Some(t),
                _ => None,
            })? {
                members.push(t.to_string());
            }
        }
        let subject = Subject::Batch(id.clone());
        let mut states = Vec::new();
        for s in &b.states {
            states.push(self.state_lineage(run, &subject, s, Some(fam))?);
        }
        let (status, trigger, state) = match &b.completion {
            None => ("open", None, None),
            Some(c) => (
                match c.outputs {
                    crate::event::BatchOutputs::Transform { .. } => "transform",
                    crate::event::BatchOutputs::Passthrough => "passthrough",
                    crate::event::BatchOutputs::Failed { .. } => "failed",
                },
                Some(c.trigger.clone()),
                Some(c.state.to_string()),
            ),
        };
        Ok(Some(BatchLineage {
            batch: id.to_string(),
            node: b.node.to_string(),
            members,
            trigger,
            state,
            status: status.to_string(),
            states,
        }))
    }

    /// A payload as a value: JSON when it parses, else a string (lossy UTF-8). `None` when
    /// purged or absent. Looked for in the run's own packs first.
    fn payload_value(&self, run: &RunId, hash: &Hash32) -> Result<Option<Value>> {
        Ok(self.run_payload(run, hash)?.map(|bytes| {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        }))
    }
}

fn outcome_lineage(t: &Terminal, seq: u64) -> OutcomeLineage {
    let (sink, ordinal) = match t {
        Terminal::Outcome(o) => match o.write() {
            Some(w) => (Some(w.sink.to_string()), Some(w.ordinal)),
            None => (None, None),
        },
        _ => (None, None),
    };
    let detail = match t {
        Terminal::Outcome(crate::event::Outcome::Failed { error }) => Some(error.clone()),
        Terminal::Outcome(crate::event::Outcome::Diverted { error, .. }) => Some(error.clone()),
        Terminal::Outcome(crate::event::Outcome::Discarded { reason }) => Some(reason.clone()),
        Terminal::Coalesced { into } => Some(format!("into {into}")),
        Terminal::ConsumedInBatch { batch } => Some(format!("batch {batch}")),
        _ => None,
    };
    OutcomeLineage {
        outcome: t.name().to_string(),
        sink,
        ordinal,
        detail,
        seq,
    }
}

fn describe(q: &LineageQuery) -> String {
    match q {
        LineageQuery::Row(r) => format!("row {r}"),
        LineageQuery::Token(t) => format!("token {t}"),
        LineageQuery::Output { sink, ordinal } => format!("output {sink}:{ordinal}"),
    }
}

#[derive(Default)]
struct Family {
    recs: BTreeMap<TokenId, TokenRec>,
    order: Vec<TokenId>,
    truncated: BTreeSet<String>,
}

impl Family {
    fn insert(&mut self, id: TokenId, rec: TokenRec) {
        self.order.push(id.clone());
        self.recs.insert(id, rec);
    }
    fn contains(&self, id: &TokenId) -> bool {
        self.recs.contains_key(id)
    }
    fn get(&self, id: &TokenId) -> Option<&TokenRec> {
        self.recs.get(id)
    }
    fn full(&self) -> bool {
        self.recs.len() >= MAX_TOKENS
    }
}
