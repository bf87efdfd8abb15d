//! CRD serving, schema validation/pruning/defaulting, status subresource,
//! generation, and discovery — through a real kube client. Each test serves
//! its custom resources from a CRD group of its own, so it holds on a shared
//! real cluster too.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use serde_json::json;

#[tokio::test]
async fn crd_is_served_after_create_and_removed_with_its_objects() {
    let ctx = start().await;
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ctx.lv_ar());
    let before = api_err(api.list(&ListParams::default()).await);
    assert_eq!(before.code, 404);

    let crd = ctx.install_crd(local_volume_crd(&ctx.group())).await;
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
            &ctx.lv(
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
        ctx.client.clone(),
        &ctx.ar("LocalVolume", "localvolumes", "v1beta1"),
    );
    let at_beta = beta.get("v1").await.unwrap();
    assert_eq!(
        at_beta.types.as_ref().map(|t| t.api_version.as_str()),
        Some(format!("{}/v1beta1", ctx.group()).as_str())
    );
    assert_eq!(at_beta.metadata.uid, created.metadata.uid);

    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    crds.delete(&ctx.lv_crd_name(), &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CRD and its objects gone", || async {
        api.get("v1").await.is_err_and(|e| is_404(&e))
            && crds
                .get(&ctx.lv_crd_name())
                .await
                .is_err_and(|e| is_404(&e))
    })
    .await;

    // Re-creating the CRD does not bring the old objects back.
    ctx.install_crd(local_volume_crd(&ctx.group())).await;
    assert!(api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

/// Discovery once it lists this test's group with both its kinds: a real
/// server publishes a new group a moment after the CRD is Established.
async fn discover(ctx: &Ctx, aggregated: bool) -> Discovery {
    let group = ctx.group();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let d = Discovery::new(ctx.client.clone());
        let d = if aggregated {
            d.run_aggregated().await
        } else {
            d.run().await
        };
        if let Ok(d) = d {
            let kinds: Vec<String> = d
                .get(&group)
                .map(|g| {
                    g.resources_by_stability()
                        .into_iter()
                        .map(|(ar, _)| ar.kind)
                        .collect()
                })
                .unwrap_or_default();
            if kinds.iter().any(|k| k == "LocalVolume") && kinds.iter().any(|k| k == "LocalDisk") {
                return d;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} not discovered in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[tokio::test]
async fn crd_with_bad_names_is_rejected() {
    let ctx = start().await;
    let mut crd = local_volume_crd(&ctx.group());
    crd["metadata"]["name"] = json!(format!("wrong.{}", ctx.group()));
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let err = api_err(api.create(&PostParams::default(), &crd).await);
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
}

#[tokio::test]
async fn selectable_fields_must_name_scalar_fields_of_the_schema() {
    let ctx = start().await;
    // Registered first: a server that wrongly accepts one of these keeps no leftover.
    ctx.cleanup.crd(ctx.lv_crd_name());
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let with_fields = |paths: &[&str]| {
        let mut crd = local_volume_crd(&ctx.group());
        let fields: Vec<serde_json::Value> = paths.iter().map(|p| json!({"jsonPath": p})).collect();
        for v in crd["spec"]["versions"].as_array_mut().unwrap() {
            v["selectableFields"] = json!(fields);
        }
        serde_json::from_value::<CustomResourceDefinition>(crd).unwrap()
    };
    for (paths, bad) in [
        (&[".spec.accessibility"][..], 0),
        (&[".spec.accessibility.nodes"], 0),
        (&[".spec.poolName", ".spec.undeclared"], 1),
        (&[".spec.nodeName", ".spec.nodeName"], 1),
    ] {
        let err = api_err(
            api.create(&PostParams::default(), &with_fields(paths))
                .await,
        );
        assert_eq!(
            (err.code, err.reason.as_str()),
            (422, "Invalid"),
            "{paths:?}"
        );
        let fields: Vec<String> = err
            .details
            .unwrap()
            .causes
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert!(
            fields.contains(&format!(
                "spec.versions[0].selectableFields[{bad}].jsonPath"
            )),
            "{paths:?}: {fields:?}"
        );
    }
    // Strings, enums among them, integers and booleans are fine.
    api.create(
        &PostParams::default(),
        &with_fields(&[".spec.poolName", ".spec.nodeName", ".spec.replicaNumber"]),
    )
    .await
    .expect("scalar fields are selectable");
}

#[tokio::test]
async fn schema_violations_are_422_with_field_causes() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let pp = PostParams::default();

    let err = api_err(api.create(&pp, &ctx.lv("v1", json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1, "replicaNumber": 5}))).await);
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        format!("{} \"v1\" is invalid: spec.replicaNumber: Invalid value: 5: spec.replicaNumber in body should be less than or equal to 4", ctx.lv_kind())
    );
    let details = err.details.expect("details");
    assert_eq!(details.name, "v1");
    assert_eq!(details.group, ctx.group());
    assert_eq!(details.kind, "LocalVolume");
    assert_eq!(details.causes.len(), 1);
    assert_eq!(details.causes[0].reason, "FieldValueInvalid");
    assert_eq!(details.causes[0].field, "spec.replicaNumber");
    assert_eq!(
        details.causes[0].message,
        "Invalid value: 5: spec.replicaNumber in body should be less than or equal to 4"
    );

    // Several violations at once: each one is a cause.
    let bad = ctx.lv(
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
            .starts_with(&format!("{} \"v2\" is invalid: [", ctx.lv_kind())),
        "{}",
        err.message
    );
    assert!(err.message.contains("spec.requiredCapacityBytes: Invalid value: 0: spec.requiredCapacityBytes in body should be greater than 0"), "{}", err.message);
    assert!(err.message.contains(r#"spec.poolName: Unsupported value: "Nope": supported values: "LocalStorage_PoolHDD", "LocalStorage_PoolSSD""#), "{}", err.message);

    // Missing required fields.
    let err = api_err(api.create(&pp, &ctx.lv("v3", json!({}))).await);
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
        api.create(&pp, &ctx.lv(name, json!({"poolName": "LocalStorage_PoolSSD", "requiredCapacityBytes": 1, "size": size})))
            .await
            .unwrap();
    }

    // metadata.name must be a DNS subdomain on every resource.
    let err = api_err(
        api.create(
            &pp,
            &ctx.lv(
                "Bad_Name",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.details.unwrap().causes[0].field, "metadata.name");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::default_namespaced(ctx.client.clone());
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("UPPER".into());
    let err = api_err(cms.create(&pp, &cm).await);
    assert_eq!(err.code, 422);
    assert!(err.message.starts_with("ConfigMap \"UPPER\" is invalid: metadata.name: Invalid value: \"UPPER\": a lowercase RFC 1123 subdomain"), "{}", err.message);
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let mut obj = ctx.lv(
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
    let mut obj = ctx.lv(
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
    let req = http::Request::post(format!(
        "/apis/{}/v1alpha1/localvolumes?fieldValidation=Strict",
        ctx.group()
    ))
    .header("Content-Type", "application/json")
    .body(
        serde_json::to_vec(&json!({"apiVersion": format!("{}/v1alpha1", ctx.group()), "kind": "LocalVolume", "metadata": {"name": "p3"},
            "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5, "bogus": 1}}))
        .unwrap(),
    )
    .unwrap();
    let err = api_err(ctx.client.request::<serde_json::Value>(req).await);
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "strict decoding error: unknown field \"spec.bogus\""
    );
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let created = ctx.create_lv(&api, "s1").await;
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
    ctx.install_crd(local_disk_crd(&ctx.group())).await;
    let ns = ctx.namespace().await;
    let disks: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &ctx.ar("LocalDisk", "localdisks", "v1alpha1"),
    );
    let mut d: DynamicObject = serde_json::from_value(json!({"apiVersion": format!("{}/v1alpha1", ctx.group()), "kind": "LocalDisk",
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
    let ctx = start().await;
    ctx.install_crd(local_volume_crd(&ctx.group())).await;
    ctx.install_crd(local_disk_crd(&ctx.group())).await;
    let group = ctx.group();

    for aggregated in [false, true] {
        let d = discover(&ctx, aggregated).await;
        let find = |group: &str, kind: &str| {
            let g = d
                .get(group)
                .unwrap_or_else(|| panic!("group {group:?} discovered"));
            g.resources_by_stability()
                .into_iter()
                .find(|(ar, _)| ar.kind == kind)
                .unwrap_or_else(|| panic!("{kind} discovered"))
        };
        let (ar, caps) = find(&group, "LocalVolume");
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
        let (_, caps) = find(&group, "LocalDisk");
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
    let list = ctx
        .client
        .list_api_group_resources(&format!("{group}/v1alpha1"))
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
    let core = ctx.client.list_core_api_resources("v1").await.unwrap();
    let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert_eq!(pods.short_names, Some(vec!["po".to_string()]));
    assert_eq!(pods.categories, Some(vec!["all".to_string()]));
    let version = ctx.client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn crd_deletion_waits_for_custom_resource_finalizers() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let mut held = ctx.lv(
        "held",
        json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
    );
    held.metadata.finalizers = Some(vec!["hwameistor.io/cleanup".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.create(
        &PostParams::default(),
        &ctx.lv(
            "free",
            json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
        ),
    )
    .await
    .unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let name = ctx.lv_crd_name();
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
    let crd = crds.get(&name).await.unwrap();
    assert!(
        crd.metadata.deletion_timestamp.is_some(),
        "CRD terminating while objects remain"
    );
    eventually("the CRD's Terminating condition", || async {
        crds.get(&name).await.is_ok_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Terminating" && c.status == "True")
        })
    })
    .await;
    eventually("objects without finalizers gone", || async {
        api.get("free").await.is_err_and(|e| is_404(&e))
    })
    .await;
    eventually("the held object marked for deletion", || async {
        api.get("held")
            .await
            .is_ok_and(|h| h.metadata.deletion_timestamp.is_some())
    })
    .await;
    // Creates are refused while the CRD terminates (a real server's handler
    // may see the condition a moment after it is set).
    let late = ctx.lv(
        "late",
        json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
    );
    eventually("creates refused with 405", || async {
        matches!(
            api.create(&PostParams::default(), &late).await,
            Err(kube::Error::Api(s)) if s.code == 405
        )
    })
    .await;

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the CRD gone", || async {
        crds.get(&name).await.is_err_and(|e| is_404(&e))
    })
    .await;
    eventually("the resource no longer served", || async {
        api.list(&ListParams::default())
            .await
            .is_err_and(|e| is_404(&e))
    })
    .await;
}
