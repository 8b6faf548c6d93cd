// A y-protocols Awareness over chatwire's ydoc:awareness:update, for the interop tests.
//
// Usage: node awareness_client.mjs '<json options>'   {url, token, documentId, mode: "announce" | "watch", name}
//   announce: joins, sets its awareness state {user: {name}}, sends it, prints {"event":"ready","clientID"},
//             then on the stdin line "vanish" exits without leaving (the server only sees the disconnect).
//   watch:    joins and applies every relayed awareness update to its own Awareness; prints
//             {"event":"seen","clientID","state","user_id"} when a remote state appears and
//             {"event":"cleared","clientID","left"} when it is removed again (left = the ydoc:user:left payloads).
import * as Y from 'yjs';
import * as awarenessProtocol from 'y-protocols/awareness';
import { io } from 'socket.io-client';
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const doc = new Y.Doc();
const awareness = new awarenessProtocol.Awareness(doc);
const left = [];
const socket = io(opts.url, {
	path: '/ws/socket.io',
	transports: ['websocket'],
	auth: { token: opts.token },
	reconnection: false
});

socket.on('connect_error', (err) => {
	out({ event: 'error', message: err.message });
	process.exit(1);
});

socket.on('ydoc:user:left', (data) => left.push(data));

socket.on('ydoc:awareness:update', (data) => {
	if (data.document_id !== opts.documentId) return;
	awarenessProtocol.applyAwarenessUpdate(awareness, new Uint8Array(data.update), 'server');
	if (opts.mode !== 'watch') return;
	for (const [clientID, state] of awareness.getStates()) {
		if (clientID !== doc.clientID && !seen.has(clientID)) {
			seen.add(clientID);
			out({ event: 'seen', clientID, state, user_id: data.user_id });
		}
	}
	for (const clientID of seen) {
		if (!awareness.getStates().has(clientID) && !cleared.has(clientID)) {
			cleared.add(clientID);
			setTimeout(() => out({ event: 'cleared', clientID, left }), 100);
		}
	}
});
const seen = new Set();
const cleared = new Set();

socket.on('connect', async () => {
	await socket.emitWithAck('user-join', { auth: { token: opts.token } });
	const ack = await socket.emitWithAck('ydoc:document:join', { document_id: opts.documentId });
	if (ack && ack.error) {
		out({ event: 'error', message: JSON.stringify(ack.error) });
		process.exit(1);
	}
	if (opts.mode === 'announce') {
		awareness.setLocalState({ user: { name: opts.name, color: '#4ECDC4' }, cursor: null });
		const update = awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]);
		const sent = await socket.emitWithAck('ydoc:awareness:update', {
			document_id: opts.documentId,
			update: Array.from(update)
		});
		out({ event: 'ready', clientID: doc.clientID, ack: sent });
		const rl = readline.createInterface({ input: process.stdin });
		rl.once('line', () => process.exit(0));
	} else {
		out({ event: 'ready', clientID: doc.clientID });
	}
});
