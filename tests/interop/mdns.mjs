// mdns.mjs - a js-libp2p node with @libp2p/mdns discovery for tests/net_mdns_interop.test.sh.
// Runs inside the network namespace the test makes (only "lo" exists there). Usage:
//   node --import ./polyfill.mjs mdns.mjs PEER_ID
// Prints "js id <its peer id>", then "js discovered <id> <addr>" for each peer mDNS finds;
// exits 0 once PEER_ID (the meshllm node) was discovered (after 2 s more, so that the meshllm
// node hears our answers too), 1 after 30 s.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'

const say = (s) => console.log(`js ${s}`)
setTimeout(() => { say('timeout'); process.exit(1) }, 30000)
const want = process.argv[2]

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [mdns({ interval: 1000 })],
  services: { identify: identify() }
})
say(`id ${node.peerId.toString()}`)
let done = false
node.addEventListener('peer:discovery', (evt) => {
  const id = evt.detail.id.toString()
  say(`discovered ${id} ${evt.detail.multiaddrs.map((a) => a.toString()).join(',')}`)
  if (id === want && !done) {
    done = true
    setTimeout(async () => { say('done ok'); await node.stop(); process.exit(0) }, 2000)
  }
})
