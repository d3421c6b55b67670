//! Rooms and private-room membership: the `rooms` and `room_members` tables.
//!
//! The message counter `rooms.last_seq` belongs to the writer task (`writer/`); this module
//! only reads it.

use crate::error::{Result, StoreError, is_unique_violation};
use crate::records::{Room, RoomRow, check_key, now_ms};

/// A room's row with its id, the cursor of [`Store::room_page`].
#[derive(sqlx::FromRow)]
struct IdRoomRow {
    id: i64,
    #[sqlx(flatten)]
    room: RoomRow,
}
use crate::store::{Store, with_pool};
use crate::users::could_exist;

const ROOM_COLUMNS: &str = "name, private, created_by, created_at, last_seq";

impl Store {
    /// Creates a room. When a user creates it, that user becomes its first member, so the creator
    /// of a private room can enter it.
    ///
    /// The name is stored as given; the server decides which names it accepts (length,
    /// characters) before calling this.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the name is taken; [`StoreError::Invalid`] for an empty or
    /// over-long (255 bytes) name or creator id, or one with a NUL; [`StoreError::Backend`] when
    /// the database fails.
    pub async fn create_room(
        &self,
        name: &str,
        private: bool,
        created_by: Option<&str>,
    ) -> Result<Room> {
        check_key("room name", name)?;
        if let Some(creator) = created_by {
            check_key("user id", creator)?;
        }
        let room = Room {
            name: name.to_owned(),
            private,
            created_by: created_by.map(str::to_owned),
            created_at: now_ms(),
            last_seq: crate::Seq(0),
        };
        let created = with_pool!(self.backend(), |pool| {
            async {
                let mut tx = pool.begin_with(self.backend().write_begin()).await?;
                let room_id: i64 = sqlx::query_scalar(
                    "INSERT INTO rooms (name, private, created_by, created_at) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(&room.name)
                .bind(room.private)
                .bind(&room.created_by)
                .bind(room.created_at)
                .fetch_one(&mut *tx)
                .await?;
                if let Some(creator) = &room.created_by {
                    sqlx::query(
                        "INSERT INTO room_members (room_id, user_id, added_at) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(room_id)
                    .bind(creator)
                    .bind(room.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            .await
        });
        match created {
            Ok(()) => Ok(room),
            Err(err) if is_unique_violation(&err) => {
                Err(StoreError::Conflict(format!("room name {name:?} is taken")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Looks a room up by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn room(&self, name: &str) -> Result<Option<Room>> {
        if !could_exist(name) {
            return Ok(None);
        }
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1");
        let row = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, RoomRow>(&sql)
                .bind(name)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Room::from))
    }

    /// Every room, public and private, oldest first. (Creation order rather than by name: the
    /// two backends would sort names by different collations.)
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn list_rooms(&self) -> Result<Vec<Room>> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms ORDER BY id");
        let rows = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, RoomRow>(&sql).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(Room::from).collect())
    }

    /// One page of the rooms `viewer` may see (public ones, and the private ones it is a member
    /// of; public ones only without a viewer), oldest first, after `cursor` (from the previous
    /// page; `None`: from the start), at most `limit`. Returns the page and the cursor of the
    /// next one (`None`: this was the last). One query, whatever the number of rooms.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn room_page(
        &self,
        viewer: Option<&str>,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Room>, Option<i64>)> {
        let sql = format!(
            "SELECT id, {ROOM_COLUMNS} FROM rooms r \
             WHERE r.id > $1 AND (r.private = $2 OR EXISTS \
               (SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = $3)) \
             ORDER BY r.id LIMIT $4"
        );
        // One more than asked: whether a next page exists.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, IdRoomRow>(&sql)
                .bind(cursor.unwrap_or(0))
                .bind(false)
                .bind(viewer.unwrap_or(""))
                .bind(fetch)
                .fetch_all(pool)
                .await
        })?;
        let more = rows.len() > limit;
        let rows: Vec<IdRoomRow> = rows.into_iter().take(limit).collect();
        let next = if more {
            rows.last().map(|row| row.id)
        } else {
            None
        };
        Ok((
            rows.into_iter().map(|row| Room::from(row.room)).collect(),
            next,
        ))
    }

    /// Makes `user_id` a member of `room`. Adding an existing member does nothing. The user need
    /// not have a row in `users` (with `ROOMCAST_USER_DIRECTORY=token` users live elsewhere).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the room does not exist; [`StoreError::Invalid`] for an
    /// empty or over-long user id, or one with a NUL; [`StoreError::Backend`] when the database
    /// fails.
    pub async fn add_member(&self, room: &str, user_id: &str) -> Result<()> {
        check_key("user id", user_id)?;
        let not_found = || StoreError::NotFound(format!("room {room:?}"));
        if !could_exist(room) {
            return Err(not_found());
        }
        // One statement: the room is looked up and the member added together, so a missing room
        // is simply "no row inserted" (told apart from "already a member" below).
        let inserted = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "INSERT INTO room_members (room_id, user_id, added_at) \
                 SELECT id, $2, $3 FROM rooms WHERE name = $1 \
                 ON CONFLICT (room_id, user_id) DO NOTHING",
            )
            .bind(room)
            .bind(user_id)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        if inserted == 0 && self.room(room).await?.is_none() {
            return Err(not_found());
        }
        Ok(())
    }

    /// Whether `user_id` is a member of `room` (false when the room does not exist).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn is_member(&self, room: &str, user_id: &str) -> Result<bool> {
        if !could_exist(room) || !could_exist(user_id) {
            return Ok(false);
        }
        let member = with_pool!(self.backend(), |pool| {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM room_members m JOIN rooms r ON r.id = m.room_id \
                 WHERE r.name = $1 AND m.user_id = $2)",
            )
            .bind(room)
            .bind(user_id)
            .fetch_one(pool)
            .await
        })?;
        Ok(member)
    }
}
