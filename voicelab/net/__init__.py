"""How packets travel: sans-IO network impairment models.

- :mod:`voicelab.net.loss`: which packets are lost (Bernoulli, Gilbert-Elliott, trace).
- :mod:`voicelab.net.delay`: how long they take (fixed delay + jitter).
- :mod:`voicelab.net.channel`: a whole one-way link (:class:`ChannelConfig`,
  :class:`Channel`) with capacity, queue, loss, delay, reordering and duplication.
- :mod:`voicelab.net.presets`: named paths (``lan``, ``wifi``, ``lte``, ...).
- :mod:`voicelab.net.iface`: the injectable network interface every live socket is opened
  through (:class:`~voicelab.net.iface.LoopbackInterface` today, a virtual network later).
- :mod:`voicelab.net.relay`: a userspace UDP relay applying the channel models to live
  traffic (asyncio adapter).
- :mod:`voicelab.net.l2link`: a two-port layer-2 link (one channel per direction) deciding
  the fate of Ethernet frames; :mod:`voicelab.net.l2forward` runs it on two real
  interfaces (``AF_PACKET``; the namespace chain's impaired links).

The models read no clock and import no ``random``: time is passed in as ``now`` and
randomness comes from :class:`numpy.random.Generator` objects or seeds. Only ``iface``,
``relay`` and ``l2forward`` (imported on demand, not from here) touch asyncio and sockets.
"""

from __future__ import annotations

from .channel import Channel, ChannelConfig, ChannelStats, PacketFate
from .delay import JITTER_DISTRIBUTIONS, DelayModel
from .loss import BernoulliLoss, GilbertElliottLoss, LossModel, NoLoss, TraceLoss
from .presets import PRESETS, describe_presets, preset

__all__ = [
    "LossModel",
    "NoLoss",
    "BernoulliLoss",
    "GilbertElliottLoss",
    "TraceLoss",
    "DelayModel",
    "JITTER_DISTRIBUTIONS",
    "ChannelConfig",
    "Channel",
    "ChannelStats",
    "PacketFate",
    "PRESETS",
    "preset",
    "describe_presets",
]
