"""Ray's fake multi-node provider, with each fake node in a temp dir of its own.

The stock provider starts every fake worker node in the head's session directory. Real nodes
have a disk each; fake nodes sharing one directory also share the runtime environments that
Ray unpacks into it, and a new node then replaces the job's working dir under the running
driver (Ray's working_dir plugin unpacks with ``overwrite=True``), which leaves the driver in a
deleted directory. Here each node gets a fresh temp dir below ``provider.node_temp_root``, as on
separate machines. Loaded by the autoscaler as an ``external`` provider
(``provider.module: fake_nodes.OwnDirFakeMultiNodeProvider``); used by the integration tests
only.
"""

from __future__ import annotations

import tempfile

import ray._private.node
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider


class OwnDirFakeMultiNodeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        root = self.provider_config["node_temp_root"]
        start_node = ray._private.node.Node

        def start_in_own_dir(ray_params, **kwargs):
            # Short names: Ray's unix socket paths must stay under ~107 characters.
            ray_params.temp_dir = tempfile.mkdtemp(prefix="n", dir=root)
            return start_node(ray_params, **kwargs)

        with self.lock:  # the provider's RLock: node starts are serialised anyway
            ray._private.node.Node = start_in_own_dir
            try:
                super()._create_node_with_resources_and_labels(
                    node_config, tags, count, resources, labels
                )
            finally:
                ray._private.node.Node = start_node
