//! Sans-IO SIP core: everything between bytes on the wire and the event package, with no
//! sockets, tasks or clocks. Time comes in as `now: Instant`; work goes out as return values.
//!
//! * [`transport`]: UDP/TCP/TLS and the [`Peer`] a message came from.
//! * [`message`]: parsing (size limit, compact names, mandatory headers, answerable errors),
//!   header helpers, RFC 3261 §8.2.6 responses, serialisation with a correct Content-Length,
//!   branch and tag generation, stream framing.
//! * [`via`]: `received`/`rport` stamping and response routing (RFC 3261 §18.2, RFC 3581).
//! * [`transaction`]: non-INVITE server and client transactions (RFC 3261 §17) with their
//!   timers, sized for millions of concurrent transactions.
//! * [`dialog`]: the UAS side of a SUBSCRIBE dialog (RFC 3261 §12) and building in-dialog
//!   requests (NOTIFY) with loose or strict routing.

pub mod dialog;
pub mod message;
pub mod transaction;
pub mod transport;
pub mod via;

pub use dialog::{Dialog, DialogError, DialogId, ViaSpec};
pub use message::{MAX_MESSAGE_SIZE, ParseError};
pub use transaction::{
    ClientAction, ClientEvent, ClientId, ClientTransactions, ServerKey, ServerTransactions,
    ServerVerdict, Timers,
};
pub use transport::{Peer, Transport};
