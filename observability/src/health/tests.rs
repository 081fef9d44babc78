use super::*;

#[test]
fn serving_only_when_every_component_serves() {
    let states = HealthStates::new();
    assert!(
        !states.snapshot().all_serving(),
        "no component: not serving"
    );
    let relay = states.component("relay");
    let store = states.component("store");
    relay.set_serving();
    assert!(!states.snapshot().all_serving(), "store still starting");
    store.set_serving();
    assert!(states.snapshot().all_serving());
    store.set_down("redis unreachable");
    assert_eq!(
        states.snapshot().get("store"),
        Some(&ComponentState::Down("redis unreachable".into()))
    );
    assert!(!states.snapshot().all_serving());
}

#[test]
fn a_dropped_component_counts_as_down() {
    let states = HealthStates::new();
    let relay = states.component("relay");
    relay.set_serving();
    assert!(states.snapshot().all_serving());
    drop(relay);
    assert!(!states.snapshot().all_serving());
}

#[tokio::test]
async fn driver_follows_the_components_and_drains_on_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus as Pb;
    use tonic_health::pb::health_server::Health;

    let reporter = HealthReporter::new();
    let health = Arc::new(tonic_health::server::HealthService::from_health_reporter(
        reporter.clone(),
    ));
    let check = |name: &'static str| {
        let health = health.clone();
        async move {
            let request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            });
            health.check(request).await.map(|r| r.into_inner().status())
        }
    };

    let states = HealthStates::new();
    let relay = states.component("relay");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(drive_health(
        reporter,
        vec!["skywire.test.v1.Svc".into()],
        states.subscribe(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let wait_for = |name: &'static str, want: Pb| {
        let check = &check;
        async move {
            for _ in 0..200 {
                if check(name).await.ok() == Some(want) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            panic!("{name:?} never became {want:?}");
        }
    };
    wait_for("", Pb::NotServing).await;
    relay.set_serving();
    wait_for("", Pb::Serving).await;
    wait_for("skywire.test.v1.Svc", Pb::Serving).await;
    drop(relay); // the accept loop died
    wait_for("", Pb::NotServing).await;
    stop_tx.send(()).unwrap();
    driver.await.unwrap();
    assert_eq!(
        check("skywire.test.v1.Svc").await.ok(),
        Some(Pb::NotServing)
    );
}
