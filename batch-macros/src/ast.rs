//! The typed model of a `batch!` invocation, as written (before validation).

use proc_macro2::{Span, TokenStream};
use syn::{Expr, Ident, Type};

/// One `batch!` invocation, as the trampoline passes it on.
///
/// ```text
/// Input   := Runtime ";" Entries
/// Runtime := the runtime crate path (`$crate` from the trampoline)
/// Entries := (Entry ("," Entry)* ","?)?
/// Entry   := Request | Arm
/// Request := Key ":" Expr ("=>" Type)?
/// Key     := Ident                                  (snake_case)
/// Arm     := ArmName Closure
/// ArmName := "before" | "progress" | "then" | "catch" | "finally"
/// Closure := "async"? "move"? "|" Params "|" Expr
/// ```
///
/// An arm whose closure is `async`, or whose body is (or ends in) an
/// `async` block, is an async arm (see [`CheckedArm::is_async`]).
///
/// An entry is a request when its first identifier is followed by `:`.
/// Unknown arm names are kept (as [`Arm::kind`] `None`) so that validation
/// can report them with a suggestion alongside every other mistake.
pub struct Input {
    /// The path generated code uses to reach the runtime.
    pub runtime: TokenStream,
    /// Requests, in definition order.
    pub requests: Vec<Request>,
    /// Arms, in the order written.
    pub arms: Vec<Arm>,
    /// Where the invocation is, for errors about the whole batch.
    pub span: Span,
}

/// `key: expr => Type`.
pub struct Request {
    pub key: Ident,
    pub expr: Expr,
    /// The `=> Type` to decode the body into; `None` keeps the response.
    pub output: Option<Type>,
}

/// `name |params| body`.
pub struct Arm {
    /// The name as written.
    pub name: Ident,
    /// The arm it names, if it names one.
    pub kind: Option<ArmKind>,
    /// Should be a closure; validation checks.
    pub closure: Expr,
}

/// The five lifecycle arms.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArmKind {
    Before,
    Progress,
    Then,
    Catch,
    Finally,
}

impl ArmKind {
    pub const ALL: [ArmKind; 5] = [
        ArmKind::Before,
        ArmKind::Progress,
        ArmKind::Then,
        ArmKind::Catch,
        ArmKind::Finally,
    ];

    /// The name in `batch!` and the `Batch` method it becomes.
    pub fn name(self) -> &'static str {
        match self {
            ArmKind::Before => "before",
            ArmKind::Progress => "progress",
            ArmKind::Then => "then",
            ArmKind::Catch => "catch",
            ArmKind::Finally => "finally",
        }
    }

    /// The closure's parameters, as the docs name them.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            ArmKind::Before => &["b"],
            ArmKind::Progress => &["b", "key", "response"],
            ArmKind::Then => &["b", "ok"],
            ArmKind::Catch => &["b", "key", "error"],
            ArmKind::Finally => &["b", "all"],
        }
    }

    /// What each parameter is, for arity errors.
    pub fn param_types(self) -> &'static str {
        match self {
            ArmKind::Before => "the batch state `&BatchState`",
            ArmKind::Progress => "the batch state `&BatchState`, the `Key` and the `&Response`",
            ArmKind::Then => "the batch state `&BatchState` and every success value `&Succeeded`",
            ArmKind::Catch => "the batch state `&BatchState`, the `Key` and the `&Error`",
            ArmKind::Finally => "the batch state `&BatchState` and every result `&Results`",
        }
    }

    /// `|b, key, response|`.
    pub fn signature(self) -> String {
        format!("|{}|", self.params().join(", "))
    }
}

/// A validated invocation: what [`expand`](crate::expand::expand) turns into
/// code. Invalid entries are already dropped.
pub struct Batch {
    pub runtime: TokenStream,
    pub requests: Vec<CheckedRequest>,
    pub arms: Vec<CheckedArm>,
}

/// A request with a unique key and its `Key` variant.
pub struct CheckedRequest {
    pub key: Ident,
    /// `Payment` for `payment`, spanned on the key.
    pub variant: Ident,
    pub expr: Expr,
    pub output: Option<Type>,
}

/// A known arm, given once, as a closure of the right arity.
pub struct CheckedArm {
    pub kind: ArmKind,
    pub closure: syn::ExprClosure,
}

impl CheckedArm {
    /// An arm whose closure returns a future is awaited after the closure returns:
    /// `|..| async move { .. }`, `|..| { ..; async move { .. } }` or an
    /// `async |..| ..` closure.
    pub fn is_async(&self) -> bool {
        self.closure.asyncness.is_some() || returns_async_block(&self.closure.body)
    }
}

/// Whether `body` is an `async` block, or a block whose value is one.
fn returns_async_block(body: &Expr) -> bool {
    match body {
        Expr::Async(_) => true,
        Expr::Block(block) => match block.block.stmts.last() {
            Some(syn::Stmt::Expr(tail, None)) => returns_async_block(tail),
            _ => false,
        },
        Expr::Paren(inner) => returns_async_block(&inner.expr),
        _ => false,
    }
}
