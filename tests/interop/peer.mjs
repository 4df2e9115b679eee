// peer.mjs - a js-libp2p peer for tests/net_interop.test.sh (127.0.0.1 only).
//   node --import ./polyfill.mjs peer.mjs listen        print our address, wait for a dialer,
//                                                       identify it, ping it back, then add a
//                                                       protocol (identify push to the dialer)
//   node --import ./polyfill.mjs peer.mjs dial ADDR     dial a meshllm node, ping it, wait
//                                                       for its identify and identify push
// Both modes also move 1 MiB through /meshllm/test-echo/1 (the side that dialed sends, the
// other echoes), so yamux flow control is exercised across implementations.
// Every result is one line on stdout starting with "js "; exit status 0 only on success.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, identifyPush } from '@libp2p/identify'
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
  services: { identify: identify(), identifyPush: identifyPush(), ping: ping() }
})

const disconnectedP = new Promise((resolve) => node.addEventListener('peer:disconnect', resolve))
const ECHO = '/meshllm/test-echo/1'
const BULK = 1024 * 1024

// Echo every byte back, respecting backpressure, then close (like @libp2p/ping's handler).
await node.handle(ECHO, async (stream) => {
  for await (const buf of stream) {
    if (!stream.send(buf)) await stream.onDrain()
  }
  await stream.close()
})

// Sends BULK patterned bytes on a new echo stream and checks what comes back.
async function bulkEcho (target) {
  const stream = await node.dialProtocol(target, ECHO)
  const data = new Uint8Array(BULK)
  for (let i = 0; i < BULK; i++) data[i] = (i * 7 + 3) & 0xff
  const reading = (async () => {
    const chunks = []
    let n = 0
    for await (const buf of stream) {
      const b = buf.subarray ? buf.subarray() : buf
      chunks.push(Uint8Array.from(b))
      n += b.length
      if (n >= BULK) break
    }
    const got = new Uint8Array(n)
    let o = 0
    for (const c of chunks) { got.set(c, o); o += c.length }
    return got
  })()
  for (let o = 0; o < BULK; o += 10000) {
    if (!stream.send(data.subarray(o, Math.min(o + 10000, BULK)))) await stream.onDrain()
  }
  const got = await reading
  await stream.close()
  if (got.length !== BULK) throw new Error(`echo returned ${got.length} bytes`)
  for (let i = 0; i < BULK; i++) if (got[i] !== data[i]) throw new Error(`echo differs at ${i}`)
  say(`echo ok bytes=${BULK}`)
}

// dial mode: our peer announces a protocol later by identify push
const pushedP = new Promise((resolve) => {
  node.addEventListener('peer:identify', (evt) => {
    if (evt.detail.protocols.includes('/meshllm/pushed-by-c/1')) resolve()
  })
})
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
    // a new protocol makes js-libp2p push an identify update to connected peers
    await node.handle('/meshllm/pushed/1', async (stream) => { await stream.close() })
    // stay until the C side hangs up
    await disconnectedP
    await finish(identified.agentVersion === 'meshllm/0.1')
  } else if (mode === 'dial') {
    const rtt = await node.services.ping.ping(multiaddr(process.argv[3]))
    say(`ping ok rtt_ms=${rtt}`)
    await identifiedP
    await bulkEcho(multiaddr(process.argv[3]))
    await pushedP
    say('push ok')
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
