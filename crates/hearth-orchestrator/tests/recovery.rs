//! A node that died without cleaning up: the next start finds its QEMU
//! processes, run directories and network slots and removes them.
//! Run by `make vm-test`.

mod common;

use common::{
    Leftovers, TEST_SLOT_PREFIX, TEST_SUBNET_OCTET, TestResult, process_running,
    runtime_and_template, test_slots,
};
use hearth_guest::Progress;
use hearth_net::EgressPolicy;
use hearth_net::SlotNaming;
use hearth_orchestrator::Reclaimed;
use hearth_orchestrator::{DataDir, NodeRuntime};
use hearth_vmm::InitParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots VMs: run with `make vm-test`"]
async fn leftovers_of_a_crashed_node_are_cleaned_up() -> TestResult {
    let (crashed, template) = runtime_and_template().await?;
    let ids = ["crashed-1", "crashed-2"];
    let _leftovers = Leftovers {
        run_dirs: ids.iter().map(|id| crashed.sandbox_dir(id)).collect(),
    };
    for id in ids {
        let running = crashed
            .clone_sandbox(
                &template,
                id,
                InitParams::default(),
                &EgressPolicy::default(),
            )
            .await?;
        // As if the node were killed: nothing runs its clean-up.
        std::mem::forget(running);
    }
    let marker = format!("{}/", crashed.sandboxes_dir().display());
    assert!(process_running(&marker), "the crashed node's VMs still run");
    assert_eq!(test_slots().len(), 2);

    // Opened as a restarting node would be: nothing cleaned beforehand.
    let restarted = NodeRuntime::open(
        DataDir::from_env(),
        SlotNaming::new(TEST_SLOT_PREFIX, TEST_SUBNET_OCTET)?,
        &Progress::new(true),
    )
    .await?;
    let reclaimed = restarted.reclaim_leftovers().await?;
    assert_eq!(
        reclaimed,
        Reclaimed {
            processes: 2,
            run_dirs: 2,
            slots: 2
        }
    );
    assert!(!process_running(&marker), "QEMU processes are left");
    assert!(
        test_slots().is_empty(),
        "slots are left: {:?}",
        test_slots()
    );
    for id in ids {
        assert!(
            !restarted.sandbox_dir(id).exists(),
            "{id}'s run directory is left"
        );
    }
    assert_eq!(restarted.reclaim_leftovers().await?, Reclaimed::default());
    Ok(())
}
