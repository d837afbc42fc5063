// Unreal Engine's Pixel Streaming data-channel messages, shared by the built-in player and
// streamer pages. A message is one byte of message id, then its fields in order, little-endian:
// uint8 (1 byte), uint16 / int16 (2), float (4), double (8), string (uint16 length in UTF-16
// code units, then UTF-16LE). These are the default ids of Epic's frontend library
// (Frontend/library StreamMessageController.populateDefaultProtocol); a streamer may announce
// other ids with the `Protocol` message (id 255 from the streamer), which the player honours.
'use strict';

(() => {
    // Player → streamer ("ToStreamer", Direction 0).
    const TO_STREAMER = {
        IFrameRequest: { id: 0, structure: [] },
        RequestQualityControl: { id: 1, structure: [] },
        FpsRequest: { id: 2, structure: [] },
        AverageBitrateRequest: { id: 3, structure: [] },
        StartStreaming: { id: 4, structure: [] },
        StopStreaming: { id: 5, structure: [] },
        LatencyTest: { id: 6, structure: ['string'] },
        RequestInitialSettings: { id: 7, structure: [] },
        TestEcho: { id: 8, structure: [] },
        UIInteraction: { id: 50, structure: ['string'] },
        Command: { id: 51, structure: ['string'] },
        TextboxEntry: { id: 52, structure: ['string'] },
        KeyDown: { id: 60, structure: ['uint8', 'uint8'] }, // keyCode, isRepeat
        KeyUp: { id: 61, structure: ['uint8'] }, // keyCode
        KeyPress: { id: 62, structure: ['uint16'] }, // charCode
        MouseEnter: { id: 70, structure: [] },
        MouseLeave: { id: 71, structure: [] },
        MouseDown: { id: 72, structure: ['uint8', 'uint16', 'uint16'] }, // button, x, y
        MouseUp: { id: 73, structure: ['uint8', 'uint16', 'uint16'] }, // button, x, y
        MouseMove: { id: 74, structure: ['uint16', 'uint16', 'int16', 'int16'] }, // x, y, dx, dy
        MouseWheel: { id: 75, structure: ['int16', 'uint16', 'uint16'] }, // delta, x, y
        MouseDouble: { id: 76, structure: ['uint8', 'uint16', 'uint16'] }, // button, x, y
        // numTouches (always 1 per message), x, y, finger index, force (0..255), in the video (0/1)
        TouchStart: { id: 80, structure: ['uint8', 'uint16', 'uint16', 'uint8', 'uint8', 'uint8'] },
        TouchEnd: { id: 81, structure: ['uint8', 'uint16', 'uint16', 'uint8', 'uint8', 'uint8'] },
        TouchMove: { id: 82, structure: ['uint8', 'uint16', 'uint16', 'uint8', 'uint8', 'uint8'] }
    };

    // Streamer → player ("FromStreamer", Direction 1): id → name.
    const FROM_STREAMER = {
        0: 'QualityControlOwnership',
        1: 'Response',
        2: 'Command',
        3: 'FreezeFrame',
        4: 'UnfreezeFrame',
        5: 'VideoEncoderAvgQP',
        6: 'LatencyTest',
        7: 'InitialSettings',
        8: 'FileExtension',
        9: 'FileMimeType',
        10: 'FileContents',
        11: 'TestEcho',
        12: 'InputControlOwnership',
        13: 'GamepadResponse',
        14: 'DataChannelLatencyTest',
        255: 'Protocol'
    };

    const SIZES = { uint8: 1, uint16: 2, int16: 2, float: 4, double: 8 };

    // Encodes `values` by `def` ({id, structure}) into an ArrayBuffer.
    function encode(def, values = []) {
        let length = 1;
        def.structure.forEach((type, i) => {
            length += type === 'string' ? 2 + 2 * String(values[i]).length : SIZES[type] || 0;
        });
        const view = new DataView(new ArrayBuffer(length));
        view.setUint8(0, def.id);
        let at = 1;
        def.structure.forEach((type, i) => {
            const v = values[i];
            switch (type) {
                case 'uint8': view.setUint8(at, clamp(v, 0, 255)); break;
                case 'uint16': view.setUint16(at, clamp(v, 0, 65535), true); break;
                case 'int16': view.setInt16(at, clamp(v, -32768, 32767), true); break;
                case 'float': view.setFloat32(at, v, true); break;
                case 'double': view.setFloat64(at, v, true); break;
                case 'string': {
                    const s = String(v);
                    view.setUint16(at, s.length, true);
                    for (let k = 0; k < s.length; k += 1) view.setUint16(at + 2 + 2 * k, s.charCodeAt(k), true);
                    at += 2 * s.length;
                    break;
                }
                default: break;
            }
            at += type === 'string' ? 2 : SIZES[type] || 0;
        });
        return view.buffer;
    }

    function clamp(v, lo, hi) {
        return Math.max(lo, Math.min(hi, Math.round(Number(v) || 0)));
    }

    // Decodes a message by the protocol `byId` (id → {name, structure}); null if unknown or short.
    function decode(byId, buffer) {
        const view = new DataView(buffer);
        if (view.byteLength < 1) return null;
        const def = byId[view.getUint8(0)];
        if (!def) return null;
        const values = [];
        let at = 1;
        try {
            for (const type of def.structure) {
                switch (type) {
                    case 'uint8': values.push(view.getUint8(at)); break;
                    case 'uint16': values.push(view.getUint16(at, true)); break;
                    case 'int16': values.push(view.getInt16(at, true)); break;
                    case 'float': values.push(view.getFloat32(at, true)); break;
                    case 'double': values.push(view.getFloat64(at, true)); break;
                    case 'string': values.push(readString(view, at)); at += 2 * view.getUint16(at, true); break;
                    default: break;
                }
                at += type === 'string' ? 2 : SIZES[type] || 0;
            }
        } catch {
            return null; // shorter than its structure says
        }
        return { name: def.name, values };
    }

    function readString(view, at) {
        const length = view.getUint16(at, true);
        let s = '';
        for (let k = 0; k < length; k += 1) s += String.fromCharCode(view.getUint16(at + 2 + 2 * k, true));
        return s;
    }

    // The text of a message whose body is a bare UTF-16LE string (Protocol, InitialSettings).
    function utf16Body(buffer) {
        return new TextDecoder('utf-16le').decode(new Uint8Array(buffer, 1));
    }

    function utf16Message(id, text) {
        const bytes = new Uint8Array(1 + 2 * text.length);
        const view = new DataView(bytes.buffer);
        bytes[0] = id;
        for (let k = 0; k < text.length; k += 1) view.setUint16(1 + 2 * k, text.charCodeAt(k), true);
        return bytes.buffer;
    }

    // id → {name, structure} for decoding, from a name → {id, structure} table.
    function byId(table) {
        const out = {};
        for (const [name, def] of Object.entries(table)) out[def.id] = { name, structure: def.structure || [] };
        return out;
    }

    window.PSInput = { TO_STREAMER, FROM_STREAMER, encode, decode, utf16Body, utf16Message, byId };
})();
