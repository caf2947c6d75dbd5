// Node's --trace-gc-nvp lines read (bench/sidecar/gcNvp.ts): lines as node 24 printed them for the
// gRPC bench's app (a scavenge and a full GC), anything else left out, and the per-call sums.
import { describe, expect, it } from "vitest"
import { nvpGcOf, nvpPerCall } from "../../bench/sidecar/gcNvp.ts"

const SCAVENGE = '[12281:0x26826000:0]    23590 ms: pause=100.3 mutator=1759.7 gc=s reduce_memory=0 interleaved=0 time_to_safepoint=0.00 heap.prologue=0.00 heap.epilogue=0.09 heap.external.prologue=0.00 heap.external.epilogue=0.00 heap.external_weak_global_handles=0.00 complete.sweep_array_buffers=0.00 scavenge=100.16 scavenge.free_remembered_set=0.10 scavenge.roots=6.97 scavenge.weak=0.00 scavenge.weak_global_handles.identify=0.00 scavenge.weak_global_handles.process=0.00 scavenge.parallel=90.09 scavenge.update_refs=0.00 scavenge.sweep_array_buffers=0.03 scavenge.resize_new_space=0.00 background.scavenge.parallel=317.69 incremental.steps_count=0 incremental.steps_took=0.0 scavenge_throughput=170410 start_object_size=107095560 end_object_size=75626128 start_memory_size=188805120 end_memory_size=201125888 start_holes_size=1407320 end_holes_size=1720624 allocated=44373240 promoted=12006712 quarantined_size=0 quarantined_pages=0 new_space_survived=10407416 nodes_died_in_new=83 nodes_copied_in_new=99 nodes_promoted=1 promotion_ratio=22.3% average_survival_ratio=34.5% promotion_rate=99.5% new_space_survive_rate_=19.3% new_space_allocation_throughput=23766.6 new_space_capacity=67108864 old_gen_allocation_limit=166888800 global_allocation_limit=166888800 allocation_throughput=27989.2 pool_local_chunks=0 pool_shared_chunks=0 pool_total_chunks=0'
const FULL = '[12281:0x26826000:0]     6921 ms: pause=15.6 mutator=312.2 gc=mc reduce_memory=0 time_to_safepoint=0.00 heap.prologue=0.00 heap.embedder_tracing_epilogue=0.03 heap.epilogue=0.00 heap.external.prologue=0.0 heap.external.epilogue=0.0 heap.external.weak_global_handles=0.0 clear=6 clear.external_string_table=4.2 clear.string_forwarding_table=0.0 clear.weak_global_handles=0.0 clear.dependent_code=0.0 clear.maps=0.1 clear.slots_buffer=0.0 clear.weak_collections=0.0 clear.weak_lists=0.0 clear.weak_references_trivial=0.9 clear.weak_references_non_trivial=0.0 clear.weak_references_filter_non_trivial=0.0 clear.js_weak_references=0.0 clear.join_filter_job=0.0clear.join_job=0.0 weakness_handling=0.0 complete.sweep_array_buffers=0.0 complete.sweeping=0.0 epilogue=0.0 evacuate=7.6 evacuate.pin_pages=0.0 evacuate.candidates=0.0 evacuate.clean_up=0.0 evacuate.copy=5.0 evacuate.prologue=0.4 evacuate.epilogue=0.6 evacuate.rebalance=0.0 evacuate.update_pointers=1.6 evacuate.update_pointers.to_new_roots=0.8 evacuate.update_pointers.slots.main=0.7 evacuate.update_pointers.weak=0.0 finish=0.5 finish.sweep_array_buffers=0.1 mark=0.4 mark.finish_incremental=0.0 mark.roots=2.0 mark.full_closure_parallel=0.2 mark.full_closure=0.0 mark.ephemeron.marking=0.1 mark.ephemeron.linear=0.0 mark.embedder_prologue=3.2 mark.embedder_tracing=0.0 prologue=0.0 sweep=0.4 sweep.code=0.0 sweep.map=0.0 sweep.new=0.0 sweep.new_lo=0.0 sweep.old=0.2 sweep.start_jobs=0.3 incremental=37.7 incremental.finalize.external.prologue=0.0 incremental.finalize.external.epilogue=0.0 incremental.layout_change=0.0 incremental.sweep_array_buffers=7.1 incremental.sweeping=0.0 incremental.embedder_tracing=0.1 incremental_wrapper_tracing_longest_step=0.0 incremental_longest_step=16.5 incremental_steps_count=76 incremental_marking_throughput=439664 incremental_walltime_duration=95 background.mark=194.4 background.sweep=0.0 background.evacuate.copy=1.1 background.evacuate.update_pointers=0.6 conservative_stack_scanning=0.00 start_object_size=62511056 end_object_size=33333592 start_memory_size=118026240 end_memory_size=111210496 start_holes_size=595648 end_holes_size=459648 allocated=7880784 promoted=781328 new_space_survived=0 nodes_died_in_new=117 nodes_copied_in_new=0 nodes_promoted=0 promotion_ratio=6.2% average_survival_ratio=44.0% promotion_rate=15.3% new_space_survive_rate=0.0% new_space_allocation_throughput=23621.4 new_space_capacity=33554432 old_gen_allocation_limit=93790688 global_allocation_limit=93790688 allocation_throughput=39000.9 pool_local_chunks=25 pool_shared_chunks=0 pool_total_chunks=25 compaction_speed=498386.7'

describe("--trace-gc-nvp lines", () => {
  it("a scavenge's and a full GC's time, kind, pause and bytes", () => {
    expect(nvpGcOf(SCAVENGE)).toEqual({ atMs: 23590, kind: "s", pauseMs: 100.3, allocated: 44373240, promoted: 12006712, survived: 10407416 })
    expect(nvpGcOf(FULL)).toMatchObject({ atMs: 6921, kind: "mc", pauseMs: 15.6 })
  })

  it("leaves out lines that are not node's: a probe's, a port, --trace-gc's short form", () => {
    expect(nvpGcOf('{"event":"bench-gc","startMs":1,"ms":2,"major":false}')).toBeUndefined()
    expect(nvpGcOf("40123")).toBeUndefined()
    expect(nvpGcOf("[1:0x1]      632 ms: Scavenge 9.1 (10.1) -> 8.7 (11.1) MB, pooled: 0 MB, 11.45 / 0.00 ms  allocation failure;")).toBeUndefined()
  })

  it("per call: KiB allocated, surviving and promoted, scavenges and full GCs and pause ms per 1,000 calls", () => {
    const gcs = [nvpGcOf(SCAVENGE)!, nvpGcOf(FULL)!]
    const per = nvpPerCall(gcs, 2000)
    expect(per.scavengesPerK).toBe(0.5)
    expect(per.fullPerK).toBe(0.5)
    expect(per.pauseMsPerK).toBeCloseTo((100.3 + 15.6) / 2, 6)
    expect(per.promotedKiB).toBeCloseTo((12006712 + gcs[1]!.promoted) / 1024 / 2000, 6)
    expect(per.allocatedKiB).toBeCloseTo((44373240 + gcs[1]!.allocated) / 1024 / 2000, 6)
  })
})
