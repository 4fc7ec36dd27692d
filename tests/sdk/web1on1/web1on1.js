'use strict';
// Web1on1's own Node.js SDK (`chipchat`), unchanged, against Patchbay's Web1on1
// compatibility, driven by tests/tests/web1on1.rs. One JSON object per line on stdout:
//   {"listening": port}      the SDK's webhook router (bot.router()) is up
//   {"renewed": true}        the SDK renewed its expired token with its refresh token
//   {"created": {...}}       bot.conversations.create(SEED) answered
//   {"whatsapp": text, ...}  bot.on('message.create.contact.chat.contact', {touchpoint:
//                            'whatsapp'}) fired for a contact's message
//   {"error": message}       anything the SDK reported (a bad signature among them)
// Environment: APIHOST, TOKEN, REFRESHTOKEN, EMAIL, SECRET, SEED (the upsert's JSON).
const express = require('express');
const Bot = require('chipchat');

const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const bot = new Bot({
    token: process.env.TOKEN,
    refreshToken: process.env.REFRESHTOKEN,
    email: process.env.EMAIL,
    secret: process.env.SECRET,
    host: process.env.APIHOST
});
bot.on('error', (e) => out({ error: (e && (e.message || e.code)) || String(e) }));
bot.on('token', () => out({ renewed: true }));
bot.on('message.create.contact.chat.contact', { touchpoint: 'whatsapp' }, (message, conversation) => {
    out({ whatsapp: message.text, conversation: conversation.id, role: message.role });
});

const app = express();
app.use('/webhook', bot.router());
const server = app.listen(0, '127.0.0.1', async () => {
    out({ listening: server.address().port });
    // The upsert goes out once the token has expired (its own exp claim), as it does for a
    // long-running integration: the SDK meets 401 "jwt expired" and renews the token.
    const { exp } = Bot.decodeJwt(process.env.TOKEN);
    while (Date.now() / 1000 < exp + 1) {
        // eslint-disable-next-line no-await-in-loop
        await new Promise((r) => { setTimeout(r, 100); });
    }
    try {
        const conversation = await bot.conversations.create(JSON.parse(process.env.SEED));
        out({ created: conversation });
    } catch (e) {
        out({ failed: e.message || String(e), status: e.statusCode });
    }
});
