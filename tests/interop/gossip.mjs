// gossip.mjs - a js-libp2p GossipSub peer (@libp2p/gossipsub, /meshsub/1.1.0 offered among
// others, StrictSign) for tests/net_gossip_interop.test.sh, on 127.0.0.1 only. It listens,
// prints "js listening <addr>", subscribes to /meshllm/interop/1 and publishes "from-js" every
// 300 ms; when a message "from-c" arrives (its signature checked by js-libp2p) it prints
// "js got from-c from <peer>", keeps publishing 2 s more so the meshllm node surely hears it,
// then prints "js done ok" and exits 0. Exits 1 after 40 s. With "dial ADDR" it also dials
// the meshllm node at ADDR (the other direction of the test).
// Run: node --import ./polyfill.mjs gossip.mjs [dial ADDR]
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'

const TOPIC = '/meshllm/interop/1'
const say = (s) => console.log(`js ${s}`)
setTimeout(() => { say('timeout'); process.exit(1) }, 40000)

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  }
})
const ps = node.services.pubsub
let gotC = false
ps.addEventListener('message', (evt) => {
  const m = evt.detail
  const text = new TextDecoder().decode(m.data)
  if (m.topic === TOPIC && text === 'from-c' && !gotC) {
    gotC = true
    say(`got from-c from ${m.type === 'signed' ? m.from.toString() : 'unsigned'}`)
    setTimeout(async () => { say('done ok'); await node.stop(); process.exit(0) }, 2000)
  }
})
ps.subscribe(TOPIC)
say(`listening ${node.getMultiaddrs()[0].toString()}`)
if (process.argv[2] === 'dial') {
  await node.dial(multiaddr(process.argv[3]))
  say('dialed')
}
setInterval(() => {
  ps.publish(TOPIC, new TextEncoder().encode('from-js')).catch(() => {})
}, 300)
