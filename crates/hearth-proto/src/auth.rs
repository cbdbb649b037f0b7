//! Authentication of the node's gRPC API: a token shared by the node and
//! its control plane, sent as `authorization: Bearer <token>` metadata on
//! every call. The node checks it in an interceptor ([`RequireToken`]); the
//! control plane adds it in one ([`SendToken`]).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";
/// Fewest characters a token may have: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// A channel to a node that sends the node's token (or none) on each call.
pub type NodeChannel = InterceptedService<Channel, SendToken>;

/// Why a text is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidNodeToken {
    TooShort(usize),
    /// Tokens are printable ASCII without spaces (they go in a header).
    NotPrintable,
}

impl std::fmt::Display for InvalidNodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort(len) => write!(
                f,
                "the node token has {len} characters; it needs at least {MIN_TOKEN_LEN}"
            ),
            Self::NotPrintable => f.write_str(
                "the node token may hold only printable ASCII characters without spaces",
            ),
        }
    }
}

impl std::error::Error for InvalidNodeToken {}

/// A node token, kept as the header value it is sent as. Its `Debug` does
/// not show it.
#[derive(Clone)]
pub struct NodeToken {
    header: MetadataValue<Ascii>,
}

impl std::fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeToken(..)")
    }
}

impl NodeToken {
    pub fn new(token: &str) -> Result<Self, InvalidNodeToken> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(InvalidNodeToken::TooShort(token.len()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidNodeToken::NotPrintable);
        }
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| InvalidNodeToken::NotPrintable)?;
        Ok(Self { header })
    }

    /// Whether `presented` (an `authorization` value) carries this token.
    /// Compared in constant time: how long a wrong token took to refuse
    /// must not tell how much of it was right.
    fn accepts(&self, presented: &[u8]) -> bool {
        let expected = self.header.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

/// The client side: adds the token to every call, when there is one.
#[derive(Debug, Clone, Default)]
pub struct SendToken(pub Option<NodeToken>);

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, token.header.clone());
        }
        Ok(request)
    }
}

/// The server side: refuses every call without the token as
/// `UNAUTHENTICATED`. With `None` every call is let in: for nodes that only
/// their own process reaches (tests, benchmarks); the `hearth` binary
/// always sets one.
#[derive(Debug, Clone, Default)]
pub struct RequireToken(pub Option<NodeToken>);

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        match request.metadata().get(AUTHORIZATION) {
            Some(presented) if token.accepts(presented.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the node token is wrong")),
            None => Err(Status::unauthenticated(
                "this node needs its token (authorization: Bearer <token>)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> NodeToken {
        NodeToken::new(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn tokens_must_be_long_and_printable() {
        assert_eq!(
            NodeToken::new("short").err(),
            Some(InvalidNodeToken::TooShort(5))
        );
        assert_eq!(
            NodeToken::new("0123456789abcdef 0123").err(),
            Some(InvalidNodeToken::NotPrintable)
        );
        assert_eq!(
            NodeToken::new("0123456789abcdef\n").err(),
            Some(InvalidNodeToken::NotPrintable)
        );
        assert!(NodeToken::new("0123456789abcdef").is_ok());
        assert_eq!(format!("{:?}", token("0123456789abcdef")), "NodeToken(..)");
    }

    #[test]
    fn the_server_takes_what_the_client_sends_and_nothing_else() {
        let right = token("0123456789abcdef0123");
        let mut sent = SendToken(Some(right.clone()))
            .call(Request::new(()))
            .unwrap_or_else(|s| panic!("{s}"));
        let mut require = RequireToken(Some(right));
        assert!(require.call(sent).is_ok());

        sent = SendToken(Some(token("0123456789abcdef0124")))
            .call(Request::new(()))
            .unwrap_or_else(|s| panic!("{s}"));
        let refused = require.call(sent).err().map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::Unauthenticated));

        let refused = require.call(Request::new(())).err().map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::Unauthenticated));

        assert!(RequireToken(None).call(Request::new(())).is_ok());
    }
}
