//! The home claims on a real redis-server: the first claim wins, a dead holder is taken over
//! exactly once, a look-up without a claim creates nothing, concurrent claims elect one home,
//! and a refresh renews only this node's own claims.

use std::collections::HashSet;

use super::cluster::{Home, refresh, resolve};
use crate::cluster::link::NodeKey;
use crate::cluster::test_redis::RedisServer;

fn node(id: &str, inc: u64) -> NodeKey {
    NodeKey::new(id, inc)
}

const KEY: &str = "signalling:session:room";

#[tokio::test]
async fn the_first_claim_wins_and_the_others_forward_to_it() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let (a, b) = (node("a", 1), node("b", 2));
    let all_up = |_: &NodeKey| true;
    assert_eq!(
        resolve(&mut conn, KEY, &a, true, all_up).await.unwrap(),
        Home::Here
    );
    assert_eq!(
        resolve(&mut conn, KEY, &b, true, all_up).await.unwrap(),
        Home::There(a.clone())
    );
    assert_eq!(
        resolve(&mut conn, KEY, &b, false, all_up).await.unwrap(),
        Home::There(a.clone())
    );
    assert_eq!(
        resolve(&mut conn, KEY, &a, true, all_up).await.unwrap(),
        Home::Here
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "a claim expires unless refreshed: {ttl}");
}

#[tokio::test]
async fn a_dead_holder_is_taken_over_and_a_look_up_alone_claims_nothing() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let (a, b, c) = (node("a", 1), node("b", 2), node("c", 3));
    // Without a claim, a session nobody holds is served here (the core will not know it).
    assert_eq!(
        resolve(&mut conn, KEY, &b, false, |_| true).await.unwrap(),
        Home::Here
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    resolve(&mut conn, KEY, &a, true, |_| true).await.unwrap();
    // a is dead for b: a look-up without a claim serves here; a registration takes it over.
    let a_dead = |n: &NodeKey| n.id.as_ref() != "a";
    assert_eq!(
        resolve(&mut conn, KEY, &b, false, a_dead).await.unwrap(),
        Home::Here
    );
    assert_eq!(
        resolve(&mut conn, KEY, &b, true, a_dead).await.unwrap(),
        Home::Here
    );
    assert_eq!(
        resolve(&mut conn, KEY, &c, true, a_dead).await.unwrap(),
        Home::There(b.clone())
    );
    // a's new incarnation is a different node: it finds b.
    assert_eq!(
        resolve(&mut conn, KEY, &node("a", 9), true, |_| true)
            .await
            .unwrap(),
        Home::There(b)
    );
}

#[tokio::test]
async fn concurrent_claims_elect_one_home() {
    let redis = RedisServer::start().await;
    let nodes: Vec<NodeKey> = (0..8).map(|i| node(&format!("n{i}"), i + 1)).collect();
    let mut claims = Vec::new();
    for me in nodes.clone() {
        let mut conn = redis.connection().await;
        claims.push(tokio::spawn(async move {
            resolve(&mut conn, KEY, &me, true, |_| true).await.unwrap()
        }));
    }
    let mut homes = Vec::new();
    for claim in claims {
        homes.push(claim.await.unwrap());
    }
    let here = homes.iter().filter(|h| **h == Home::Here).count();
    assert_eq!(here, 1, "{homes:?}");
    let elsewhere: HashSet<&Home> = homes.iter().filter(|h| **h != Home::Here).collect();
    assert_eq!(
        elsewhere.len(),
        1,
        "everyone else names the same home: {homes:?}"
    );
}

#[tokio::test]
async fn a_refresh_renews_only_this_nodes_claims() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let (a, b) = (node("a", 1), node("b", 2));
    let other = "signalling:session:other";
    resolve(&mut conn, KEY, &a, true, |_| true).await.unwrap();
    resolve(&mut conn, other, &b, true, |_| true).await.unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg(KEY)
        .arg(5000)
        .query_async(&mut conn)
        .await
        .unwrap();
    refresh(&mut conn, &[KEY.to_owned(), other.to_owned()], &a)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 5000, "renewed: {ttl}");
    let holder: String = redis::cmd("GET")
        .arg(other)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holder, "b/2", "another node's claim stays its own");
}
