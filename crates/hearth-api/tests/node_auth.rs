//! The node's gRPC API with a token: the control plane's node client sends
//! it, and a call without it (or with another) is refused.

mod common;

use std::time::Duration;

use common::{FakeNode, TestResult};
use hearth_api::Node;
use hearth_proto::auth::NodeToken;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn calls_need_the_node_token() -> TestResult {
    let token = NodeToken::new("9f0c2a6d4b8e1f3a5c7e9b0d2f4a6c8e")?;
    let (_node, address) = FakeNode::start_requiring(Some(token.clone())).await?;

    let anonymous = Node::new("node", &address)?;
    let refused = anonymous.list(DEADLINE).await.err().map(|s| s.code());
    assert_eq!(refused, Some(Code::Unauthenticated));
    let refused = anonymous.info(DEADLINE).await.err().map(|s| s.code());
    assert_eq!(refused, Some(Code::Unauthenticated));

    let impostor = Node::new("node", &address)?
        .with_token(NodeToken::new("9f0c2a6d4b8e1f3a5c7e9b0d2f4a6c8f")?);
    let refused = impostor.list(DEADLINE).await.err().map(|s| s.code());
    assert_eq!(refused, Some(Code::Unauthenticated));

    let trusted = Node::new("node", &address)?.with_token(token);
    assert_eq!(trusted.list(DEADLINE).await?.len(), 0);
    assert_eq!(trusted.info(DEADLINE).await?.max_sandboxes, 1000);
    let deleted = trusted
        .templates()
        .delete(hearth_api::nodes::call(
            hearth_proto::orchestrator::TemplateDeleteRequest::default(),
        ))
        .await;
    assert!(
        deleted.as_ref().err().map(|s| s.code()) != Some(Code::Unauthenticated),
        "template calls carry the token too: {deleted:?}"
    );
    Ok(())
}
