//! HTTP over the OpenSSL plaintext hooks: incremental HTTP/1.x parsing per connection
//! (`parse`), detections over messages and plaintext (`secrets`: secrets leaving, admin paths,
//! injection payloads) and login floods per client (`flood`).

pub mod flood;
pub mod parse;
pub mod secrets;

pub use flood::{Clock, FloodAlert, FloodConfig, LoginFloodDetector, MonotonicClock};
pub use parse::{
    Direction, HttpLimits, HttpMessage, HttpRequest, HttpResponse, HttpStream, Protocol,
};
pub use secrets::{HttpFinding, HttpFindingKind, LeakCarry, RequestInspector, SecretLeakDetector};
