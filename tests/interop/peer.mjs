// peer.mjs - a js-libp2p peer for tests/net_interop.test.sh (127.0.0.1 only).
//   node --import ./polyfill.mjs peer.mjs listen        print our address, wait for a dialer,
//                                                       identify it and ping it back
//   node --import ./polyfill.mjs peer.mjs dial ADDR     dial a meshllm node, ping it, wait
//                                                       for its identify
// Every result is one line on stdout starting with "js "; exit status 0 only on success.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'

const mode = process.argv[2]
const say = (s) => console.log(`js ${s}`)
const deadline = setTimeout(() => { say('timeout'); process.exit(1) }, 30000)

const node = await createLibp2p({
  addresses: { listen: mode === 'listen' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})

const disconnectedP = new Promise((resolve) => node.addEventListener('peer:disconnect', resolve))
let identified = null
const identifiedP = new Promise((resolve) => {
  node.addEventListener('peer:identify', (evt) => {
    const d = evt.detail
    identified = d
    say(`identify peer=${d.peerId.toString()} agent=${d.agentVersion} protocols=${d.protocols.join(',')} listen=${d.listenAddrs.map(String).join(',')} observed=${d.observedAddr ? d.observedAddr.toString() : ''}`)
    resolve(d)
  })
})

async function finish (ok) {
  clearTimeout(deadline)
  await node.stop()
  say(ok ? 'done ok' : 'done failed')
  process.exit(ok ? 0 : 1)
}

try {
  if (mode === 'listen') {
    say(`listening ${node.getMultiaddrs()[0].toString()}`)
    const d = await identifiedP
    const rtt = await node.services.ping.ping(d.peerId)
    say(`ping ok rtt_ms=${rtt}`)
    // stay until the C side hangs up
    await disconnectedP
    await finish(identified.agentVersion === 'meshllm/0.1')
  } else if (mode === 'dial') {
    const rtt = await node.services.ping.ping(multiaddr(process.argv[3]))
    say(`ping ok rtt_ms=${rtt}`)
    await identifiedP
    // let the C side identify us and ping us back before we hang up
    await new Promise((resolve) => setTimeout(resolve, 1500))
    await finish(identified.agentVersion === 'meshllm/0.1')
  } else {
    say(`unknown mode ${mode}`)
    process.exit(2)
  }
} catch (err) {
  say(`error ${err && err.stack ? err.stack.replace(/\n/g, " | ") : (err && err.type ? "event " + err.type + " " + (err.detail ?? "") : String(err))}`)
  await finish(false)
}
