"""colabs/scaling.ipynb: the (data, fsdp, tensor) mesh, the rules table and where every
parameter byte lives; 8 simulated devices on a CPU runtime, the chips on a TPU runtime."""

from colab_cells.common import INSTALL, LOAD_CONFIG, SHRINK, code, md, size_switch

CELLS = [
    md("""
        # Scaling: mesh, logical axes and parameter sharding

        jaxdisco trains from one CPU to a TPU pod with one mesh of three axes:
        - `data`: batch split, parameters replicated;
        - `fsdp`: batch split *and* parameters / optimizer state split (gathered layer by
          layer inside the step);
        - `tensor`: attention heads and the FFN split (Megatron style).

        Models name logical axes only (`embed`, `mlp`, `heads`, ...); one rules table,
        `config.parallel.rules`, maps them onto the mesh. This notebook builds the mesh, shows
        how the rules place each parameter, creates a train state that is born sharded, trains
        a few steps on the mesh and, without any devices, lowers the train step for a pod.

        On a CPU runtime JAX is told to simulate 8 devices. On a TPU runtime
        (Runtime → Change runtime type → TPU) the same cells use the TPU chips.
        """),
    INSTALL,
    size_switch(
        "the test suite's 32-wide model, 6 train steps, the demo model lowered for 64 chips",
        "wav2vec 2.0 BASE (95M parameters) on the mesh, LARGE lowered for 256 chips",
    ),
    code("""
        # Must happen before JAX starts (restart the runtime if jax was already imported). It
        # only affects the CPU platform: on a TPU runtime jax.devices() are the TPU chips.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        ).strip()
        import jax

        devices = jax.devices()
        print(f"{len(devices)} devices on {jax.default_backend()}: {devices[0].device_kind}")
        """),
    LOAD_CONFIG,
    SHRINK,
    md("""
        ## The mesh

        `config.parallel.{data, fsdp, tensor}` give the sizes; one of them may be -1 ("fill
        the devices"). With 8 devices: 2-way tensor parallelism and the rest fsdp.
        """),
    code("""
        from jaxdisco.parallel import mesh as mesh_lib

        config = shrink(load_config("demo")) if TINY else load_config("wav2vec2_base")
        n = jax.device_count()
        tensor = 2 if n % 2 == 0 and n >= 4 else 1
        config.parallel.data, config.parallel.fsdp, config.parallel.tensor = 1, -1, tensor
        mesh = mesh_lib.make_mesh(config.parallel)
        print(f"mesh {dict(mesh.shape)}; device ids laid out as [data, fsdp, tensor]:")
        print(mesh.device_ids)
        """),
    md("""
        ## The rules table

        Each parameter is created with logical axis names (`nn.with_logical_partitioning`).
        The first rule naming an axis whose mesh axis is still free wins, and a dimension the
        mesh axes do not divide stays whole (`jaxdisco/parallel/rules.py`).
        """),
    code("""
        from jax.sharding import PartitionSpec as P
        from jaxdisco.parallel import rules as rules_lib

        rules = rules_lib.rules_from_config(config.parallel)
        for logical, mesh_axes in rules:
          print(f"  {logical:>16} -> {mesh_axes}")
        embed, ffn = config.model.embed_dim, config.model.ffn_dim
        for logical, shape in ((("embed", "mlp"), (embed, ffn)), (("mlp", "embed"), (ffn, embed)),
                               (("embed", "mlp"), (embed + 1, ffn))):
          spec = rules_lib.mesh_spec(P(*logical), shape, mesh, rules)
          print(f"{str(logical):>18} {str(shape):>12} -> {spec}")
        """),
    md("""
        ## A train state born sharded

        `jax.eval_shape` of the initializer gives shapes and logical axes; the rules turn them
        into `NamedSharding`s; the initializer is then jitted with those output shardings, so
        no device ever holds the whole state. The layout report is what the trainer prints at
        start-up (and it refuses to run when too much stays replicated under fsdp).
        """),
    code("""
        from flax import linen as nn
        from jaxdisco.models.config import ModelConfig
        from jaxdisco.parallel import layout as layout_lib
        from jaxdisco.train.optimizer import make_optimizer
        from jaxdisco.train.pretrain import boxed_init_fn
        from jaxdisco.train.state import sharded_state_factory

        model_config = ModelConfig.from_dict(config.model.to_dict())
        # Parameter shapes do not depend on the input: a 1 s dummy batch keeps init cheap.
        init = boxed_init_fn(model_config, (n, 16_000), seed=0)
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          create_state, abstract_state, shardings = sharded_state_factory(
              init, make_optimizer(config.optim, config.train.num_steps),
              lambda: jax.random.key(0), mesh, rules)
          state = create_state()
        layout = layout_lib.state_layout(abstract_state, shardings)
        print(layout.report())
        """),
    code("""
        # The largest parameters: global shape, mesh spec, and the shard each device holds.
        for leaf in sorted(layout.params, key=lambda x: -x.global_bytes)[:8]:
          print(f"{leaf.path:<55} {str(list(leaf.shape)):>12} {leaf.spec:<32} "
                f"{leaf.device_bytes / leaf.global_bytes:>6.1%} per device")

        ffn_in = state.params["params"]["backbone"]["encoder"]["layer_0"]["ffn_in"]["kernel"]
        print(f"\\nlayer_0/ffn_in/kernel {ffn_in.shape}: spec {ffn_in.sharding.spec}, "
              f"shard {ffn_in.addressable_shards[0].data.shape} on each of "
              f"{len(ffn_in.sharding.device_set)} devices")
        jax.debug.visualize_array_sharding(ffn_in)
        """),
    md("""
        ## Train on the mesh

        The trainer builds its mesh from `config.parallel` and splits every batch over
        `data` x `fsdp` (the batch size must be a multiple of that). Here: 2-way data
        parallelism x 4-way fsdp, the tiny model, no validation.
        """),
    code("""
        from jaxdisco.train.pretrain import train_and_evaluate

        train_config = shrink(load_config("demo"))  # Small enough to train in seconds on CPU.
        train_config.data.valid_manifest = ""
        p = train_config.parallel
        p.data, p.fsdp, p.tensor = (2, -1, 1) if n % 2 == 0 else (1, -1, 1)
        train_config.data.batch_size = max(8, n)  # A multiple of data x fsdp = n.
        if not TINY:
          train_config.train.num_steps, train_config.train.log_every = 100, 10
        summary = train_and_evaluate(train_config, os.path.abspath("runs/scaling_demo"))
        """),
    md("""
        ## A pod without the pod

        `jaxdisco.parallel.aot` lowers the train step on an *abstract* mesh (no devices) with
        the trainer's shardings: an uneven split or a bad rule fails here, and the layout gives
        per-device parameter and optimizer bytes before a pod is reserved
        (`benchmarks/memory_table.py` prints the full table).
        """),
    code("""
        from jaxdisco.parallel import aot

        pod_config = load_config("demo" if TINY else "wav2vec2_large")
        pod_devices = 64 if TINY else 256
        pod_config.parallel.data, pod_config.parallel.fsdp, pod_config.parallel.tensor = 1, -1, 1
        pod = aot.lower_train_step(pod_config, pod_devices)
        mib = lambda b: f"{b / 2**20:,.2f} MiB"
        print(f"mesh {pod.mesh_shape}: params {mib(pod.layout.param_bytes)} in total, "
              f"{mib(pod.layout.param_bytes_per_device)} + optimizer "
              f"{mib(pod.layout.optimizer_bytes_per_device)} per chip; "
              f"{pod.layout.replicated_fraction:.1%} of parameter bytes replicated")
        """),
]
