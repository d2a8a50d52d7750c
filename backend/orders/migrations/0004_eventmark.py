from django.db import migrations, models

# An existing installation has published every event it holds: its mark starts at the latest seq.
START_AT_LATEST = """
INSERT INTO orders_eventmark (name, seq, previous, updated_at)
SELECT 'release', COALESCE(MAX(seq), 0), COALESCE(MAX(seq), 0), now() FROM orders_orderevent
ON CONFLICT (name) DO NOTHING
"""


class Migration(migrations.Migration):

    dependencies = [
        ("orders", "0003_order_notified_status"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventMark",
            fields=[
                ("name", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField(default=0)),
                ("previous", models.BigIntegerField(default=0)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.RunSQL(START_AT_LATEST, reverse_sql=migrations.RunSQL.noop),
    ]
