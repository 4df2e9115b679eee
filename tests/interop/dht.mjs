// dht.mjs - two js-libp2p Kademlia nodes (A, B) for tests/net_dht_interop.test.sh, on
// 127.0.0.1 only, DHT protocol /ipfs/kad/1.0.0 in server mode. B joins through A, stores a
// signed /meshllm record and provides a CID, then prints "js ready A=<addr> B=<id>". When a
// meshllm node (agent meshllm/0.1) shows up it checks, from the JS side, that the record
// and provider record the meshllm node stored can be read, and that B can find its peer
// info. Run: node --import ./polyfill.mjs dht.mjs
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'

const say = (s) => console.log(`js ${s}`)
const deadline = setTimeout(() => { say('timeout'); process.exit(1) }, 45000)
const enc = new TextEncoder()

async function make (privateKey) {
  return createLibp2p({
    privateKey,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: '/ipfs/kad/1.0.0',
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        // JS stores /meshllm records as opaque values; the meshllm side checks signatures
        validators: { meshllm: async () => {} },
        selectors: { meshllm: () => 0 }
      })
    }
  })
}

// A /meshllm record as net/dht.h defines it: 0x01 | seq u64 BE | sig | data, signed over
// "meshllm-record:" || key || seq || data by the peer named in the key.
async function meshllmRecord (key, peerId, name, seq, data) {
  const k = enc.encode(`/meshllm/${peerId.toString()}/${name}`)
  const seq8 = new Uint8Array(8)
  new DataView(seq8.buffer).setBigUint64(0, BigInt(seq))
  const ctx = enc.encode('meshllm-record:')
  const msg = new Uint8Array(ctx.length + k.length + 8 + data.length)
  msg.set(ctx, 0); msg.set(k, ctx.length); msg.set(seq8, ctx.length + k.length); msg.set(data, ctx.length + k.length + 8)
  const sig = await key.sign(msg)
  const val = new Uint8Array(1 + 8 + sig.length + data.length)
  val[0] = 1; val.set(seq8, 1); val.set(sig, 9); val.set(data, 9 + sig.length)
  return { k, val }
}

const cidOf = async (text) => CID.createV1(0x55, await sha256.digest(enc.encode(text)))
const until = async (fn, what) => {
  for (let i = 0; i < 40; i++) {
    try { const r = await fn(); if (r) return r } catch (err) { if (i === 39) say(`${what} error ${err.message}`) }
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`${what} never succeeded`)
}

try {
  const keyB = await generateKeyPair('Ed25519')
  const a = await make()
  const b = await make(keyB)
  let meshllmPeer = null
  const meshllmP = new Promise((resolve) => a.addEventListener('peer:identify', (evt) => {
    if (evt.detail.agentVersion === 'meshllm/0.1') { meshllmPeer = evt.detail.peerId; resolve() }
  }))
  await b.dial(a.getMultiaddrs()[0])
  // wait until each has the other in its routing table
  await until(async () => {
    for await (const p of b.services.dht.getClosestPeers(a.peerId.toMultihash().bytes)) if (p.name === 'FINAL_PEER' && p.peer.id.equals(a.peerId)) return true
    return false
  }, 'B sees A')
  const rec = await meshllmRecord(keyB, b.peerId, 'js', 1, enc.encode('from-js'))
  await b.contentRouting.put(rec.k, rec.val)
  say('put ok')
  await b.contentRouting.provide(await cidOf('meshllm-interop-js'))
  say('provide ok')
  say(`ready A=${a.getMultiaddrs()[0].toString()} B=${b.peerId.toString()}`)

  await meshllmP
  const c = meshllmPeer
  const got = await until(async () => a.contentRouting.get(enc.encode(`/meshllm/${c.toString()}/c`)), 'get of the meshllm record')
  const data = new TextDecoder().decode(got.subarray(1 + 8 + 64))
  say(`get ok data=${data}`)
  const cidC = await cidOf('meshllm-interop-c')
  await until(async () => {
    for await (const p of b.contentRouting.findProviders(cidC)) if (p.id.equals(c)) return true
    return false
  }, 'findProviders')
  say('providers ok')
  const info = await until(async () => b.peerRouting.findPeer(c), 'findPeer')
  say(`findpeer ok addrs=${info.multiaddrs.map(String).join(',')}`)
  clearTimeout(deadline)
  await b.stop()
  await a.stop()
  say(data === 'from-c' ? 'done ok' : 'done failed')
  process.exit(data === 'from-c' ? 0 : 1)
} catch (err) {
  say(`error ${err && err.stack ? err.stack.replace(/\n/g, ' | ') : String(err)}`)
  process.exit(1)
}
