//! CRD serving, schema validation/pruning/defaulting, status subresource,
//! generation, and discovery — through a real kube client.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use serde_json::json;

#[tokio::test]
async fn crd_is_served_after_create_and_removed_with_its_objects() {
    let (_server, client) = start().await;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &lv_ar());
    let before = api_err(api.list(&ListParams::default()).await);
    assert_eq!(before.code, 404);

    let crd = install_crd(&client, local_volume_crd()).await;
    let status = crd.status.expect("CRD status");
    let conds: Vec<(String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert!(
        conds.contains(&("NamesAccepted".into(), "True".into())),
        "{conds:?}"
    );
    assert!(
        conds.contains(&("Established".into(), "True".into())),
        "{conds:?}"
    );
    let accepted = status.accepted_names.expect("acceptedNames");
    assert_eq!(accepted.kind, "LocalVolume");
    assert_eq!(accepted.singular.as_deref(), Some("localvolume"));
    assert_eq!(accepted.list_kind.as_deref(), Some("LocalVolumeList"));
    assert_eq!(status.stored_versions, Some(vec!["v1alpha1".to_string()]));

    assert!(api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let created = api
        .create(
            &PostParams::default(),
            &lv(
                "v1",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1024}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    // The same object is served at the other version, with its apiVersion.
    let beta: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar("LocalVolume", "localvolumes", "v1beta1"),
    );
    let at_beta = beta.get("v1").await.unwrap();
    assert_eq!(
        at_beta.types.as_ref().map(|t| t.api_version.as_str()),
        Some("hwameistor.io/v1beta1")
    );
    assert_eq!(at_beta.metadata.uid, created.metadata.uid);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("localvolumes.hwameistor.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(api.get("v1").await).code, 404);
    assert_eq!(
        api_err(crds.get("localvolumes.hwameistor.io").await).code,
        404
    );

    // Re-creating the CRD does not bring the old objects back.
    install_crd(&client, local_volume_crd()).await;
    assert!(api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn crd_with_bad_names_is_rejected() {
    let (_server, client) = start().await;
    let mut crd = local_volume_crd();
    crd["metadata"]["name"] = json!("wrong.hwameistor.io");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let err = api_err(api.create(&PostParams::default(), &crd).await);
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
}

#[tokio::test]
async fn schema_violations_are_422_with_field_causes() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let pp = PostParams::default();

    let err = api_err(api.create(&pp, &lv("v1", json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1, "replicaNumber": 5}))).await);
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "LocalVolume.hwameistor.io \"v1\" is invalid: spec.replicaNumber: Invalid value: 5: spec.replicaNumber in body should be less than or equal to 4"
    );
    let details = err.details.expect("details");
    assert_eq!(details.name, "v1");
    assert_eq!(details.group, "hwameistor.io");
    assert_eq!(details.kind, "LocalVolume");
    assert_eq!(details.causes.len(), 1);
    assert_eq!(details.causes[0].reason, "FieldValueInvalid");
    assert_eq!(details.causes[0].field, "spec.replicaNumber");
    assert_eq!(
        details.causes[0].message,
        "Invalid value: 5: spec.replicaNumber in body should be less than or equal to 4"
    );

    // Several violations at once: each one is a cause.
    let bad = lv(
        "v2",
        json!({
            "poolName": "Nope",
            "requiredCapacityBytes": 0,
            "volumeGroup": "Has_Upper_And_Is_Too_Long",
            "accessibility": {"nodes": ["a", "b", ""]},
            "size": true,
            "labels": {"x": 1},
            "ratio": 0.25,
        }),
    );
    let err = api_err(api.create(&pp, &bad).await);
    assert_eq!(err.code, 422);
    let causes: Vec<(String, String)> = err
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| (c.reason, c.field))
        .collect();
    for want in [
        ("FieldValueNotSupported", "spec.poolName"),
        ("FieldValueInvalid", "spec.requiredCapacityBytes"),
        ("FieldValueTooLong", "spec.volumeGroup"),
        ("FieldValueInvalid", "spec.volumeGroup"),
        ("FieldValueTooMany", "spec.accessibility.nodes"),
        ("FieldValueInvalid", "spec.accessibility.nodes[2]"),
        ("FieldValueTypeInvalid", "spec.size"),
        ("FieldValueTypeInvalid", "spec.labels.x"),
        ("FieldValueInvalid", "spec.ratio"),
    ] {
        assert!(
            causes.contains(&(want.0.to_string(), want.1.to_string())),
            "missing {want:?} in {causes:?}"
        );
    }
    assert!(
        err.message
            .starts_with("LocalVolume.hwameistor.io \"v2\" is invalid: ["),
        "{}",
        err.message
    );
    assert!(err.message.contains("spec.requiredCapacityBytes: Invalid value: 0: spec.requiredCapacityBytes in body should be greater than 0"), "{}", err.message);
    assert!(err.message.contains(r#"spec.poolName: Unsupported value: "Nope": supported values: "LocalStorage_PoolHDD", "LocalStorage_PoolSSD""#), "{}", err.message);

    // Missing required fields.
    let err = api_err(api.create(&pp, &lv("v3", json!({}))).await);
    let causes = err.details.unwrap().causes;
    let required: Vec<&str> = causes
        .iter()
        .filter(|c| c.reason == "FieldValueRequired")
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(
        required,
        vec!["spec.poolName", "spec.requiredCapacityBytes"]
    );

    // An int-or-string accepts both forms.
    for size in [json!(10), json!("10Gi")] {
        let name = if size.is_string() { "s-str" } else { "s-int" };
        api.create(&pp, &lv(name, json!({"poolName": "LocalStorage_PoolSSD", "requiredCapacityBytes": 1, "size": size})))
            .await
            .unwrap();
    }

    // metadata.name must be a DNS subdomain on every resource.
    let err = api_err(
        api.create(
            &pp,
            &lv(
                "Bad_Name",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.details.unwrap().causes[0].field, "metadata.name");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(client.clone());
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("UPPER".into());
    let err = api_err(cms.create(&pp, &cm).await);
    assert_eq!(err.code, 422);
    assert!(err.message.starts_with("ConfigMap \"UPPER\" is invalid: metadata.name: Invalid value: \"UPPER\": a lowercase RFC 1123 subdomain"), "{}", err.message);
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let mut obj = lv(
        "p1",
        json!({
            "poolName": "LocalStorage_PoolHDD",
            "requiredCapacityBytes": 5,
            "bogus": {"deep": 1},
            "config": {"anything": {"goes": [1, 2]}},
            "accessibility": {"nodes": ["n1"], "extra": true},
            "note": null,
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t", "labels": {"a": "b"}}, "spec": {"x": 1}},
        }),
    );
    obj.data["topLevelJunk"] = json!("x");
    obj.data["status"] = json!({"state": "Ready"});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec.get("bogus"), None, "unknown field pruned");
    assert_eq!(
        created.data.get("topLevelJunk"),
        None,
        "unknown top-level field pruned"
    );
    assert_eq!(spec["accessibility"], json!({"nodes": ["n1"]}));
    assert_eq!(
        spec["config"],
        json!({"anything": {"goes": [1, 2]}}),
        "preserve-unknown-fields keeps everything"
    );
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"a": "b"}),
        "embedded resource keeps metadata"
    );
    assert_eq!(spec["template"]["spec"], json!({"x": 1}));
    assert_eq!(spec["replicaNumber"], json!(1), "default applied");
    assert_eq!(spec["note"], json!(null), "nullable null kept");
    assert_eq!(
        created.data.get("status"),
        None,
        "status is not settable on create with a status subresource"
    );

    // A null in a non-nullable field with a default gets the default.
    let mut obj = lv(
        "p2",
        json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5, "replicaNumber": null}),
    );
    obj.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["replicaNumber"], json!(1));

    // The stored object is the pruned one.
    let got = api.get("p1").await.unwrap();
    assert_eq!(got.data["spec"].get("bogus"), None);
    assert_eq!(got.data["spec"]["replicaNumber"], json!(1));

    // fieldValidation=Strict turns pruning into a 400 (what kubectl apply sends).
    let req = http::Request::post("/apis/hwameistor.io/v1alpha1/localvolumes?fieldValidation=Strict")
        .header("Content-Type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "p3"},
                "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5, "bogus": 1}}))
            .unwrap(),
        )
        .unwrap();
    let err = api_err(client.request::<serde_json::Value>(req).await);
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "strict decoding error: unknown field \"spec.bogus\""
    );
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let created = api
        .create(
            &PostParams::default(),
            &lv(
                "s1",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // A status write changes only status; spec in the body is ignored.
    let st = api
        .patch_status(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicaNumber": 3}, "status": {"state": "Ready", "allocatedCapacityBytes": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["state"], "Ready");
    assert_eq!(st.data["spec"]["replicaNumber"], 1);
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status change does not bump generation"
    );
    assert!(rv_of(&st) > rv_of(&created));

    // Status is validated on /status too.
    let err = api_err(
        api.patch_status(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Bogus"}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.details.unwrap().causes[0].field, "status.state");

    // A main-resource write ignores status.
    let mut obj = api.get("s1").await.unwrap();
    obj.data["status"] = json!({"state": "NotReady"});
    obj.data["spec"]["replicaNumber"] = json!(2);
    let replaced = api
        .replace("s1", &PostParams::default(), &obj)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["state"], "Ready");
    assert_eq!(replaced.data["spec"]["replicaNumber"], 2);
    assert_eq!(
        replaced.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );

    // Metadata-only changes keep the generation.
    let labelled = api
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(rv_of(&labelled) > rv_of(&replaced));

    // A write that changes nothing does not bump resourceVersion.
    let same = api
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(rv_of(&same), rv_of(&labelled));

    // Without a status subresource, status is part of the object and counts.
    install_crd(&client, local_disk_crd()).await;
    let disks: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar("LocalDisk", "localdisks", "v1alpha1"),
    );
    let mut d: DynamicObject = serde_json::from_value(json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalDisk",
        "metadata": {"name": "d1"}, "spec": {"devicePath": "/dev/sdb"}, "status": {"state": "Free"}}))
    .unwrap();
    d = disks.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(
        d.data["status"]["state"], "Free",
        "no status subresource: status settable on create"
    );
    d.data["status"]["state"] = json!("InUse");
    let d = disks
        .replace("d1", &PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(d.data["status"]["state"], "InUse");
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(
        api_err(disks.get_status("d1").await).code,
        404,
        "no /status without the subresource"
    );
}

#[tokio::test]
async fn discovery_lists_builtins_and_crds() {
    let (_server, client) = start().await;
    install_crd(&client, local_volume_crd()).await;
    install_crd(&client, local_disk_crd()).await;

    for aggregated in [false, true] {
        let d = Discovery::new(client.clone());
        let d = if aggregated {
            d.run_aggregated().await.unwrap()
        } else {
            d.run().await.unwrap()
        };
        let find = |group: &str, kind: &str| {
            let g = d
                .get(group)
                .unwrap_or_else(|| panic!("group {group:?} discovered"));
            g.resources_by_stability()
                .into_iter()
                .find(|(ar, _)| ar.kind == kind)
                .unwrap_or_else(|| panic!("{kind} discovered"))
        };
        let (ar, caps) = find("hwameistor.io", "LocalVolume");
        assert_eq!(ar.plural, "localvolumes");
        assert_eq!(
            ar.version, "v1beta1",
            "preferred version is the most stable served one"
        );
        assert_eq!(caps.scope, Scope::Cluster);
        assert!(caps.supports_operation(verbs::WATCH));
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "localvolumes/status" || s.plural == "status"),
            "status subresource: {:?}",
            caps.subresources
                .iter()
                .map(|(s, _)| s.plural.clone())
                .collect::<Vec<_>>()
        );
        let (_, caps) = find("hwameistor.io", "LocalDisk");
        assert_eq!(caps.scope, Scope::Namespaced);
        let (_, caps) = find("", "Pod");
        assert_eq!(caps.scope, Scope::Namespaced);
        let (_, caps) = find("", "Node");
        assert_eq!(caps.scope, Scope::Cluster);
        let (_, caps) = find("coordination.k8s.io", "Lease");
        assert_eq!(caps.scope, Scope::Namespaced);
        let (_, caps) = find("storage.k8s.io", "StorageClass");
        assert_eq!(caps.scope, Scope::Cluster);
        let (_, caps) = find("rbac.authorization.k8s.io", "ClusterRoleBinding");
        assert_eq!(caps.scope, Scope::Cluster);
        let (_, caps) = find("policy", "PodDisruptionBudget");
        assert_eq!(caps.scope, Scope::Namespaced);
    }

    // Short names and categories are published in legacy discovery.
    let list = client
        .list_api_group_resources("hwameistor.io/v1alpha1")
        .await
        .unwrap();
    let lv = list
        .resources
        .iter()
        .find(|r| r.name == "localvolumes")
        .unwrap();
    assert_eq!(lv.short_names, Some(vec!["lv".to_string()]));
    assert_eq!(lv.categories, Some(vec!["hwameistor".to_string()]));
    assert!(!lv.namespaced);
    assert!(list
        .resources
        .iter()
        .any(|r| r.name == "localvolumes/status"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert_eq!(pods.short_names, Some(vec!["po".to_string()]));
    assert_eq!(pods.categories, Some(vec!["all".to_string()]));
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn crd_deletion_waits_for_custom_resource_finalizers() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let mut held = lv(
        "held",
        json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
    );
    held.metadata.finalizers = Some(vec!["hwameistor.io/cleanup".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.create(
        &PostParams::default(),
        &lv(
            "free",
            json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
        ),
    )
    .await
    .unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("localvolumes.hwameistor.io", &DeleteParams::default())
        .await
        .unwrap();
    let crd = crds.get("localvolumes.hwameistor.io").await.unwrap();
    assert!(
        crd.metadata.deletion_timestamp.is_some(),
        "CRD terminating while objects remain"
    );
    assert_eq!(
        api_err(api.get("free").await).code,
        404,
        "objects without finalizers go at once"
    );
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let err = api_err(
        api.create(
            &PostParams::default(),
            &lv(
                "late",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 405);

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_err(crds.get("localvolumes.hwameistor.io").await).code,
        404
    );
    assert_eq!(
        api_err(api.list(&ListParams::default()).await).code,
        404,
        "resource no longer served"
    );
}
