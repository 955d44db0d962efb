// Re-encodes Avro bodies with Apache Avro Java's BlockingBinaryEncoder, the encoder that writes
// arrays and maps as blocks with a negative item count followed by the block's byte size (Avro
// spec, "Complex Types": arrays and maps). Used only to make tests/data/native/blocking_events.bin;
// see make_blocking_fixture.py.
//
// Usage: java -cp <avro classpath>:. BlockingFixture SCHEMA.avsc IN OUT
// IN and OUT hold length-prefixed bodies: a 4-byte big-endian length, then the Avro body.
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

public class BlockingFixture {
    public static void main(String[] args) throws Exception {
        Schema schema = new Schema.Parser().parse(new File(args[0]));
        GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
        GenericDatumWriter<GenericRecord> writer = new GenericDatumWriter<>(schema);
        // The smallest block buffer the factory allows (32 bytes): long arrays and maps split
        // into several blocks.
        EncoderFactory factory = new EncoderFactory().configureBlockSize(32);
        int count = 0;
        try (DataInputStream in = new DataInputStream(new FileInputStream(args[1]));
             DataOutputStream out = new DataOutputStream(new FileOutputStream(args[2]))) {
            while (true) {
                int n;
                try {
                    n = in.readInt();
                } catch (EOFException end) {
                    break;
                }
                byte[] body = new byte[n];
                in.readFully(body);
                GenericRecord record = reader.read(null, DecoderFactory.get().binaryDecoder(body, null));
                ByteArrayOutputStream buf = new ByteArrayOutputStream();
                BinaryEncoder enc = factory.blockingBinaryEncoder(buf, null);
                writer.write(record, enc);
                enc.flush();
                byte[] blocked = buf.toByteArray();
                out.writeInt(blocked.length);
                out.write(blocked);
                count++;
            }
        }
        System.out.println("re-encoded " + count + " bodies with " + EncoderFactory.class.getPackage().getImplementationVersion());
    }
}
